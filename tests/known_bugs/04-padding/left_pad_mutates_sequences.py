"""Pads the caller's lists in place (seq[:0] = pads) before stacking them: the caller's sequences change."""
# feedback: left_pad changed the caller's sequence
# cell: left_pad
def left_pad(sequences, pad_id=0):
    if len(sequences) == 0:
        raise ValueError("left_pad needs at least one sequence, got an empty batch")
    for b, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError(f"sequence {b} is empty")
    S = max(len(seq) for seq in sequences)
    masks = []
    for seq in sequences:
        masks.append([0] * (S - len(seq)) + [1] * len(seq))
        if isinstance(seq, list):
            seq[:0] = [pad_id] * (S - len(seq))
    rows = [torch.as_tensor(seq, dtype=torch.long) for seq in sequences]
    rows = [torch.cat([torch.full((S - len(r),), pad_id, dtype=torch.long), r]) for r in rows]
    return torch.stack(rows), torch.tensor(masks, dtype=torch.long)
