"""The frequency exponent is i/D instead of 2i/D: the frequencies fall too slowly."""
# feedback: your frequency exponent is i/D
# cell: rope_cos_sin
def rope_cos_sin(position_ids, head_dim, base=10000.0, dtype=torch.float32):
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2, got head_dim={head_dim!r}")
    i = torch.arange(head_dim // 2, dtype=torch.float32)  # i, not 2i
    inv_freq = 1.0 / base ** (i / head_dim)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
