"""Pairs the channels with view on a flattened x: a non-contiguous x (a head split's transpose) raises."""
# feedback: Use reshape, not view
# cell: apply_rope_interleaved
def apply_rope_interleaved(x, cos, sin):
    B, H, T, D = x.shape
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    cos_i, sin_i = cos[..., : D // 2], sin[..., : D // 2]
    pairs = x.view(B * H * T, D // 2, 2).view(B, H, T, D // 2, 2)  # view needs a contiguous x
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((even * cos_i - odd * sin_i, odd * cos_i + even * sin_i), dim=-1).flatten(-2)
