"""Computes in float32 and forgets to cast back: float16 inputs give a float32 output."""
# feedback: has dtype torch.float32, expected torch.float16
# cell: apply_rope
def apply_rope(x, cos, sin):
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"the head dimension D={D} must be even")
    if tuple(cos.shape) not in ((T, D), (B, T, D)) or cos.shape != sin.shape:
        raise ValueError(f"cos/sin of shape {tuple(cos.shape)} do not fit x of shape {tuple(x.shape)}")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x, cos, sin = x.float(), cos.float(), sin.float()
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
