"""Uses arange(S) as position ids, so a left-padded sequence starts at the number of pads instead of 0."""
# feedback: not shifted for left padding
# cell: position_ids
def position_ids(attention_mask):
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D, got {tuple(attention_mask.shape)}")
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        raise ValueError(f"attention_mask must hold only 0 and 1, found {attention_mask[bad].tolist()}")
    B, S = attention_mask.shape
    return torch.arange(S).expand(B, S).clone()
