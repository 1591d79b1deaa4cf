"""Online softmax: normalises each block on its own instead of the whole row."""
# feedback: normalised each block on its own
# cell: online_softmax
def online_softmax(x, block_size):
    """softmax(x) along the last dim, from the online statistics of blocks of block_size columns.

    Shapes:
        x: (*, N); returns: (*, N), x's dtype
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got block_size={block_size}")
    parts = []
    for block in x.split(block_size, dim=-1):
        m, l = online_softmax_stats([block])
        parts.append(torch.exp(block - m.clamp_min(torch.finfo(m.dtype).min)) / l.clamp_min(torch.finfo(l.dtype).tiny))
    return torch.cat(parts, dim=-1).to(x.dtype)
