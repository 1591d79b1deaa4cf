"""Builds the mask with attnlab.attention_mask_for, which the task forbids in the answers."""
# feedback: attnlab.attention_mask_for
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    from attnlab import attention_mask_for
    B, S = attention_mask.shape
    T = S if T is None else T
    if T > S:
        raise ValueError(f"padded_causal_mask needs T <= S, got T={T}, S={S}")
    return attention_mask_for(attention_mask, T)
