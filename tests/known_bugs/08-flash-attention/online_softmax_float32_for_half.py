"""Online softmax: returns float32 probabilities for float16 logits instead of their dtype."""
# feedback: expected torch.float16
# cell: online_softmax
def online_softmax(x, block_size):
    """softmax(x) along the last dim, from the online statistics of blocks of block_size columns.

    Shapes:
        x: (*, N); returns: (*, N), x's dtype
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got block_size={block_size}")
    m, l = online_softmax_stats(x.split(block_size, dim=-1))  # (*, 1) each
    p = torch.exp(x - m.clamp_min(torch.finfo(m.dtype).min))  # rows of all -inf: exp(-inf) = 0
    return p / l.clamp_min(torch.finfo(l.dtype).tiny)  # and 0 / tiny = 0, not 0 / 0
