"""Counts positions in place on attention_mask.long(), which is the caller's own tensor when it is already long."""
# feedback: changed its input `attention_mask` in place
# cell: position_ids
def position_ids(attention_mask):
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D, got {tuple(attention_mask.shape)}")
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        raise ValueError(f"attention_mask must hold only 0 and 1, found {attention_mask[bad].tolist()}")
    real = attention_mask != 0
    positions = attention_mask.long()  # no copy when attention_mask is already long
    positions.cumsum_(dim=-1)
    positions.sub_(1)
    positions.masked_fill_(~real, 0)
    return positions
