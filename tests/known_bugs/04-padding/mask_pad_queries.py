"""Masks the pad queries (rows) instead of the pad keys (columns): real queries still attend to pads."""
# feedback: masked the pad queries (rows) instead of the pad keys (columns)
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"padded_causal_mask needs 1 <= T <= S, got T={T}, S={S}")
    keys = (attention_mask != 0)[:, None, -T:, None]
    causal = causal_mask(T, S, device=attention_mask.device)
    return keys & causal
