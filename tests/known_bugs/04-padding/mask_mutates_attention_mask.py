"""Adds the head and query axes with unsqueeze_, changing the shape of the caller's attention_mask in place."""
# feedback: changed its input `attention_mask` in place
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"padded_causal_mask needs 1 <= T <= S, got T={T}, S={S}")
    keys = attention_mask.unsqueeze_(1).unsqueeze_(1) != 0
    causal = causal_mask(T, S, device=attention_mask.device)
    return keys & causal
