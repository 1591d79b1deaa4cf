"""Subtracts the number of pads from arange(S): right for left padding only, wrong for right padding or gaps."""
# feedback: assume left padding
# cell: position_ids
def position_ids(attention_mask):
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a 2-D (B, S) tensor, got {shape}")
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        raise ValueError(f"attention_mask must hold only 0 and 1, found {sorted(set(attention_mask[bad].tolist()))}")
    real = attention_mask != 0
    pads = (~real).long().sum(dim=-1, keepdim=True)
    positions = (torch.arange(attention_mask.shape[1])[None, :] - pads).clamp(min=0)
    return positions.masked_fill(~real, 0)
