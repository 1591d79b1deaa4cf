"""apply_rope checks D but not the tables' shape: tables for other positions broadcast or fail with a RuntimeError instead of a ValueError."""
# feedback: must raise ValueError
# cell: apply_rope
def apply_rope(x, cos, sin):
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"the head dimension D={D} must be even")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
