"""The checker always rotates to 128 positions, whatever max_position says: a table that is long enough for max_position is reported broken."""
# feedback: below position 40 the short table is right
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = 128  # "more positions can only help"
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(P)
    scores = (rotate(q.expand(1, 1, P, head_dim), positions)[0, 0].double()
              @ rotate(k.expand(1, 1, P, head_dim), positions)[0, 0].double().T)
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item() for d in range(1 - P, P))
