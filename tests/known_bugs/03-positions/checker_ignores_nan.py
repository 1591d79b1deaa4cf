"""The checker has no NaN check: Python's max(0.0, nan) is 0.0, so a rotation that returns NaN passes."""
# feedback: a rotation that returns NaN must give inf
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(max_position)
    scores = rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double() @ rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double().T
    worst = 0.0
    for d in range(1 - max_position, max_position):
        diagonal = torch.diagonal(scores, d)
        worst = max(worst, (diagonal - diagonal[0]).abs().max().item())
    return worst
