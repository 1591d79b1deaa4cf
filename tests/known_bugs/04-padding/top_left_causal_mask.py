"""Builds the causal part with tril() aligned to the top-left, wrong when T < S (decoding with a cache)."""
# feedback: aligned to the top-left
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    keys = (attention_mask != 0)[:, None, None, :]
    return keys & torch.ones(T, S, dtype=torch.bool).tril()
