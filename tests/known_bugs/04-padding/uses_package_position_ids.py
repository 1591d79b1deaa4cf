"""Hands the work to attnlab.position_ids, which the task forbids in the answers."""
# feedback: attnlab.position_ids
# cell: position_ids
def position_ids(attention_mask):
    import attnlab
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D (B, S), got shape {tuple(attention_mask.shape)}")
    return attnlab.position_ids(attention_mask)
