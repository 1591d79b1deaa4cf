"""The checker looks at the first 16 positions only, whatever max_position says: a table too short for long inputs passes."""
# feedback: every position below max_position
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = min(max_position, 16)  # "small positions are enough"
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(P)
    scores = rotate(q.expand(1, 1, P, head_dim), positions)[0, 0].double() @ rotate(k.expand(1, 1, P, head_dim), positions)[0, 0].double().T
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item() for d in range(1 - P, P))
