"""The checker draws q and k in float64 "for precision": a rotation that is wrong in float32 only passes."""
# feedback: in float32 only
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g, dtype=torch.float64)
    positions = torch.arange(max_position)
    scores = (rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double()
              @ rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double().T)
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item()
               for d in range(1 - max_position, max_position))
