"""The causality check seeds and draws from the global random generator: it resets the caller's random state."""
# feedback: changed the global random state
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    torch.manual_seed(seed)
    q, k, v = torch.randn(2, T, D), torch.randn(2, S, D), torch.randn(2, S, D)
    base = attend(q, k, v)
    for j in range(S):
        k2, v2 = k.clone(), v.clone()
        k2[:, j] = torch.randn(2, D) * 3
        v2[:, j] = torch.randn(2, D) * 3
        earlier = max(0, j - (S - T))
        if not torch.allclose(attend(q, k2, v2)[:, :earlier], base[:, :earlier], atol=1e-5, rtol=0):
            return True
    return False
