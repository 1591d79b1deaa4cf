"""Aligns the causal mask to the top-left (like is_causal=True), wrong whenever T != S."""
# feedback: aligned to the top-left
# cell: causal_mask
def causal_mask(T, S=None):
    S = T if S is None else S
    if T < 1 or T > S:
        raise ValueError(f"need 1 <= T <= S, got T={T}, S={S}")
    return torch.ones(T, S, dtype=torch.bool).tril()
