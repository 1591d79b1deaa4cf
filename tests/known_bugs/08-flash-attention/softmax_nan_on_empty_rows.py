"""Online softmax: divides 0 by 0 in rows that are all -inf."""
# feedback: rows that are all -inf
# cell: online_softmax
def online_softmax(x, block_size):
    """softmax(x) along the last dim, from the online statistics of blocks of block_size columns.

    Shapes:
        x: (*, N); returns: (*, N), x's dtype
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got block_size={block_size}")
    m, l = online_softmax_stats(x.split(block_size, dim=-1))  # (*, 1) each
    p = torch.exp(x - m)  # rows of all -inf: exp(-inf) = 0
    return (p / l).to(x.dtype)  # and 0 / tiny = 0, not 0 / 0
