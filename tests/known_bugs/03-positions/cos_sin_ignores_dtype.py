"""The dtype argument is ignored: the tables are always float32."""
# feedback: has dtype torch.float32, expected torch.bfloat16
# cell: rope_cos_sin
def rope_cos_sin(position_ids, head_dim, base=10000.0, dtype=torch.float32):
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2, got head_dim={head_dim!r}")
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = position_ids[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()
