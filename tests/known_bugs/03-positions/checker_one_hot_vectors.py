"""The checker uses unit vectors q = k = e_0 ("one direction is enough"): only channel pair 0 takes part, so a rotation broken in the other pairs passes."""
# feedback: wrong in every channel pair but the first
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    q = torch.zeros(1, 1, 1, head_dim)
    q[..., 0] = 1.0
    k = q.clone()
    positions = torch.arange(max_position)
    scores = (rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double()
              @ rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double().T)
    if not torch.isfinite(scores).all():
        return float("inf")
    return max((torch.diagonal(scores, d) - torch.diagonal(scores, d)[0]).abs().max().item()
               for d in range(1 - max_position, max_position))
