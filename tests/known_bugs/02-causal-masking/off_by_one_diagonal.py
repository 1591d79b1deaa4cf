"""Shifts the diagonal by one, so every query also sees the next token."""
# feedback: off by one
# cell: causal_mask
def causal_mask(T, S=None):
    S = T if S is None else S
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T + 1)
