"""No input checks: an odd head dimension or tables of the wrong shape are not refused with a ValueError."""
# feedback: must raise ValueError
# cell: apply_rope
def apply_rope(x, cos, sin):
    D = x.shape[-1]
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
