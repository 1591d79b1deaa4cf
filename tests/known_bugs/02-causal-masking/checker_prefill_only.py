"""The causality check always runs S queries (a full prefill, T == S) whatever T is: a leak that shows only when T < S passes."""
# feedback: a leak only after a cache
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)  # S queries: "the prefill covers every position anyway"
    for j in range(S):
        k2, v2 = k.clone(), v.clone()
        k2[:, j] = torch.randn(2, D, generator=g) * 3
        v2[:, j] = torch.randn(2, D, generator=g) * 3
        if not torch.allclose(attend(q, k2, v2)[:, :j], base[:, :j], atol=1e-5, rtol=0):
            return True
    return False
