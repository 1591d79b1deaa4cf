"""The causality check changes only the last key (j = S - 1): a leak of any other key passes."""
# feedback: a leak at one query only
# cell: leaks_future
def leaks_future(attend, T, S, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, T, D, generator=g), torch.randn(2, S, D, generator=g), torch.randn(2, S, D, generator=g)
    base = attend(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, -1] = torch.randn(2, D, generator=g) * 3  # "the newest token is the one that must stay hidden"
    v2[:, -1] = torch.randn(2, D, generator=g) * 3
    earlier = max(0, S - 1 - (S - T))
    return not torch.allclose(attend(q, k2, v2)[:, :earlier], base[:, :earlier], atol=1e-5, rtol=0)
