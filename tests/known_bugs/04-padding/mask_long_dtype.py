"""Returns the mask as 0/1 integers (.long()) instead of bool: ~mask is then a bitwise not, and PyTorch reads a number mask as added to the logits."""
# feedback: the mask must be a bool tensor
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    if T < 1 or T > S:
        raise ValueError(f"padded_causal_mask needs 1 <= T <= S, got T={T}, S={S}")
    keys = (attention_mask != 0)[:, None, None, :]
    causal = causal_mask(T, S, device=attention_mask.device)
    return (keys & causal).long()
