"""Writes cumsum - 1 everywhere: the pads before the first real token get -1 (an invalid index) instead of 0."""
# feedback: each pad must get 0
# cell: position_ids
def position_ids(attention_mask):
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a 2-D (B, S) tensor, got {shape}")
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        raise ValueError(f"attention_mask must hold only 0 and 1, found {sorted(set(attention_mask[bad].tolist()))}")
    real = attention_mask != 0
    positions = real.long().cumsum(dim=-1) - 1
    return positions
