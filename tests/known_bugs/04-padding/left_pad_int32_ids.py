"""Builds input_ids as int32 (torch.int), not torch.long: an embedding lookup wants long ids."""
# feedback: has dtype torch.int32, expected torch.int64
# cell: left_pad
def left_pad(sequences, pad_id=0):
    if len(sequences) == 0:
        raise ValueError("left_pad needs at least one sequence, got an empty batch")
    rows = [torch.as_tensor(seq, dtype=torch.long).flatten() for seq in sequences]
    empty = [b for b, row in enumerate(rows) if row.numel() == 0]
    if empty:
        raise ValueError(f"sequences {empty} are empty: nothing to pad")
    S = max(row.numel() for row in rows)
    input_ids = torch.full((len(rows), S), pad_id, dtype=torch.int32)
    attention_mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, S - row.numel():] = row
        attention_mask[b, S - row.numel():] = 1
    return input_ids, attention_mask
