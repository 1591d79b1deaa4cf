"""The checker uses a head dimension of 2 (one channel pair) whatever head_dim is: bugs in the other pairs pass."""
# feedback: all head_dim channels
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    head_dim = 2  # "every pair is a 2-D rotation, so one pair is enough"
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(max_position)
    scores = rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double() @ rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double().T
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item() for d in range(1 - max_position, max_position))
