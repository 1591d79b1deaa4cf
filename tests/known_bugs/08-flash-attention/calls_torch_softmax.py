"""Online softmax: calls torch.softmax instead of using the online statistics."""
# feedback: your answer calls torch.softmax
# cell: online_softmax
def online_softmax(x, block_size):
    """softmax(x) along the last dim, from the online statistics of blocks of block_size columns.

    Shapes:
        x: (*, N); returns: (*, N), x's dtype
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got block_size={block_size}")
    return torch.softmax(x, dim=-1).nan_to_num(nan=0.0)
