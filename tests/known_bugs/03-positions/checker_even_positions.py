"""The checker rotates to every other position only ("to save time"): a rotation wrong at one odd position passes."""
# feedback: wrong at position 37 only
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(0, max_position, 2)
    P = len(positions)
    scores = (rotate(q.expand(1, 1, P, head_dim), positions)[0, 0].double()
              @ rotate(k.expand(1, 1, P, head_dim), positions)[0, 0].double().T)
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item() for d in range(1 - P, P))
