"""The causality check looks only at the first query's output: a leak at a later query passes."""
# feedback: a leak at one query only
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, T, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)
    for j in range(S - T + 1, S):  # keys after the first query's position S - T
        k2, v2 = k.clone(), v.clone()
        k2[:, j] = torch.randn(2, D, generator=g) * 3
        v2[:, j] = torch.randn(2, D, generator=g) * 3
        if not torch.allclose(attend(q, k2, v2)[:, 0], base[:, 0], atol=1e-5, rtol=0):
            return True
    return False
