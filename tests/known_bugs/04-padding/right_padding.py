"""Pads on the right, so a short prompt's last column is a pad and generation continues from it."""
# feedback: Looks like right padding
# cell: left_pad
def left_pad(sequences, pad_id=0):
    if len(sequences) == 0:
        raise ValueError("empty batch")
    rows = [torch.as_tensor(seq, dtype=torch.long).flatten() for seq in sequences]
    empty = [b for b, row in enumerate(rows) if row.numel() == 0]
    if empty:
        raise ValueError(f"sequences {empty} are empty")
    S = max(row.numel() for row in rows)
    input_ids = torch.full((len(rows), S), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, :row.numel()] = row
        attention_mask[b, :row.numel()] = 1
    return input_ids, attention_mask
