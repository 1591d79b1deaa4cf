"""Adjacent channels (2i, 2i+1) rotated together where the half split (i, i + D/2) was asked."""
# feedback: you rotated adjacent channels (2i, 2i+1), the interleaved pairing
# cell: apply_rope
def apply_rope(x, cos, sin):
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"the head dimension D={D} must be even")
    if tuple(cos.shape) not in ((T, D), (B, T, D)) or cos.shape != sin.shape:
        raise ValueError(f"cos/sin of shape {tuple(cos.shape)} do not fit x of shape {tuple(x.shape)}")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    pairs = x.unflatten(-1, (D // 2, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # rotate_every_two
    return x * cos + rotated * sin
