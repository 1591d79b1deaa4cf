"""Returns the causal mask only, so real queries attend to pad keys."""
# feedback: you dropped the padding mask
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    return causal_mask(T, S).expand(B, 1, T, S)
