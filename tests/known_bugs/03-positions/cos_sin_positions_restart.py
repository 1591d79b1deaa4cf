"""Positions 0 .. T-1 instead of the values of position_ids: wrong after a KV cache and under left padding."""
# feedback: instead of the values of position_ids
# cell: rope_cos_sin
def rope_cos_sin(position_ids, head_dim, base=10000.0, dtype=torch.float32):
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2, got head_dim={head_dim!r}")
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    positions = torch.arange(position_ids.shape[-1]).expand(position_ids.shape)  # ignores the values
    angles = positions[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
