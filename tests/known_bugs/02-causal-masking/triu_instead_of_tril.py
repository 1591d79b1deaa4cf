"""Builds the causal mask with triu where tril was meant, so queries see the future."""
# feedback: triu where tril was meant
# cell: causal_mask
def causal_mask(T, S=None):
    S = T if S is None else S
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    return torch.ones(T, S, dtype=torch.bool).triu(diagonal=S - T)
