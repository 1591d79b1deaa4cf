"""The interleaved rotation written with rotate_half: the half-split pairing where adjacent pairs were asked."""
# feedback: you used the half-split pairing
# cell: apply_rope_interleaved
def apply_rope_interleaved(x, cos, sin):
    D = x.shape[-1]
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
