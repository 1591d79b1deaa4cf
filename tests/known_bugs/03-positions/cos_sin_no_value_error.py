"""No check of head_dim: an odd head dimension gives tables of the wrong width instead of a ValueError."""
# feedback: must raise ValueError
# cell: rope_cos_sin
def rope_cos_sin(position_ids, head_dim, base=10000.0, dtype=torch.float32):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
