"""The causality check keeps allclose's default rtol: on large outputs a leak above 1e-5 passes as rounding."""
# feedback: on outputs near 10
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, T, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)
    for j in range(S):
        k2, v2 = k.clone(), v.clone()
        k2[:, j] = torch.randn(2, D, generator=g) * 3
        v2[:, j] = torch.randn(2, D, generator=g) * 3
        earlier = max(0, j - (S - T))
        if not torch.allclose(attend(q, k2, v2)[:, :earlier], base[:, :earlier], atol=1e-5):
            return True
    return False
