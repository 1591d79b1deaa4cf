"""The causality check changes key j but not value j: a leak through the values alone passes."""
# feedback: a leak through the values only
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, T, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)
    for j in range(S):
        k2 = k.clone()
        k2[:, j] = torch.randn(2, D, generator=g) * 3
        earlier = max(0, j - (S - T))
        if not torch.allclose(attend(q, k2, v)[:, :earlier], base[:, :earlier], atol=1e-5, rtol=0):
            return True
    return False
