"""The checker compares only scores at offset 0 (query and key at the same position): a table clamped at a maximum position passes."""
# feedback: compare every pair of positions with the same offset
# cell: relative_position_error
def relative_position_error(rotate, head_dim, max_position=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    positions = torch.arange(max_position)
    scores = rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double() @ rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double().T
    if not torch.isfinite(scores).all():
        return float("inf")
    same = torch.diagonal(scores, 0)  # only m == n
    return (same - same[0]).abs().max().item()
