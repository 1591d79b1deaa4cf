"""Raises ValueError for T > S, but the message names neither T nor S."""
# feedback: name T=5 and S=3 in the message
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError("too many queries")
    keys = (attention_mask != 0)[:, None, None, :]
    causal = causal_mask(T, S, device=attention_mask.device)
    return keys & causal
