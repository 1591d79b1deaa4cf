"""Refuses an empty batch but pads an empty sequence into a row of pads only, instead of raising ValueError."""
# feedback: with an empty sequence at index
# cell: left_pad
def left_pad(sequences, pad_id=0):
    if len(sequences) == 0:
        raise ValueError("left_pad needs at least one sequence, got an empty batch")
    rows = [torch.as_tensor(seq, dtype=torch.long).flatten() for seq in sequences]
    S = max(row.numel() for row in rows)
    input_ids = torch.full((len(rows), S), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, S - row.numel():] = row
        attention_mask[b, S - row.numel():] = 1
    return input_ids, attention_mask
