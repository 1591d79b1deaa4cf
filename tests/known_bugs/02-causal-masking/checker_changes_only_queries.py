"""The causality check changes token j's query only; queries never influence each other, so no leak is ever found."""
# feedback: Change every key position j
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, T, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)
    for i in range(T):
        q2 = q.clone()
        q2[:, i] = torch.randn(2, D, generator=g) * 3
        if not torch.allclose(attend(q2, k, v)[:, :i], base[:, :i], atol=1e-5, rtol=0):
            return True
    return False
