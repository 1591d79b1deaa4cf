"""Online softmax: rescales by exp(m_new - m_old), growing the old terms instead of shrinking them."""
# feedback: the old terms must shrink
# cell: online_softmax_stats
def online_softmax_stats(blocks):
    """Row maximum m and denominator l = sum_j exp(x_j - m), in one pass over the blocks.

    Shapes:
        each block: (*, b), b may differ between blocks
        returns: m (*, 1), l (*, 1), float32 or wider
    """
    m = l = None
    for block in blocks:
        block = block.to(torch.promote_types(block.dtype, torch.float32))
        if m is None:  # start from the first block
            m = block.amax(dim=-1, keepdim=True)
            l = torch.exp(block - m).sum(dim=-1, keepdim=True)
            continue
        m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))  # (*, 1)
        l = l * torch.exp(m_new - m) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
        m = m_new
    return m, l
