"""The causality check draws float64 inputs "for precision": an attention that leaks in float32 only passes."""
# feedback: a leak in float32 only
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, n, D, generator=g, dtype=torch.float64) for n in (T, S, S))
    base = attend(q, k, v)
    for j in range(S):
        k2, v2 = k.clone(), v.clone()
        k2[:, j] = torch.randn(2, D, generator=g, dtype=torch.float64) * 3
        v2[:, j] = torch.randn(2, D, generator=g, dtype=torch.float64) * 3
        earlier = max(0, j - (S - T))
        if not torch.allclose(attend(q, k2, v2)[:, :earlier], base[:, :earlier], atol=1e-5, rtol=0):
            return True
    return False
