"""Never checks the mask: a 3-D mask or a mask holding 2 gives position ids instead of a ValueError."""
# feedback: must raise ValueError
# cell: position_ids
def position_ids(attention_mask):
    real = attention_mask != 0
    positions = real.long().cumsum(dim=-1) - 1
    return positions.masked_fill(~real, 0)
