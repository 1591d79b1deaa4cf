"""Never checks T <= S, so T > S gives a mask instead of a ValueError."""
# feedback: must raise ValueError
# cell: padded_causal_mask
def padded_causal_mask(attention_mask, T=None):
    B, S = attention_mask.shape
    T = S if T is None else T
    keys = (attention_mask != 0)[:, None, None, :]
    return keys & torch.ones(T, S, dtype=torch.bool).tril(S - T)
