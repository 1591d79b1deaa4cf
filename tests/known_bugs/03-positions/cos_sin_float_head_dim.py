"""head_dim is not checked to be an int: head_dim=8.0 gives tables instead of a ValueError."""
# feedback: head_dim=8.0
# cell: rope_cos_sin
def rope_cos_sin(position_ids, head_dim, base=10000.0, dtype=torch.float32):
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2, got head_dim={head_dim!r}")
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
