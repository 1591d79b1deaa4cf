"""Adjacent pairs rotated with the half-split table as it is: channel c gets the angle of cos[..., c], so a pair's two channels turn by different angles."""
# feedback: you used the half-split table as it is
# cell: apply_rope_interleaved
def apply_rope_interleaved(x, cos, sin):
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin
