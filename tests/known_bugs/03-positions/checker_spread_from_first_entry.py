"""The checker measures each diagonal against its first entry, not the largest difference between two entries."""
# feedback: orthogonal vectors of distinct lengths
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(max_position)
    rotated_q = rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double()
    rotated_k = rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double()
    scores = rotated_q @ rotated_k.T
    if not torch.isfinite(scores).all():
        return float("inf")
    worst = 0.0
    for offset in range(1 - max_position, max_position):
        diagonal = torch.diagonal(scores, offset)
        worst = max(worst, (diagonal - diagonal[0]).abs().max().item())
    return worst
