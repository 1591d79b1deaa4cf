"""Never checks T <= S, so T > S silently gives a mask instead of a ValueError."""
# feedback: must raise ValueError
# cell: causal_mask
def causal_mask(T, S=None):
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
