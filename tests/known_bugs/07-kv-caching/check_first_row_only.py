"""The check compares only the first prompt of the batch (row 0), tokens and logits."""
# feedback: compare every batch row
# cell: compare_cached_uncached
def compare_cached_uncached(generate_fn, model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
    '''(same_tokens, max_diff) between generate_fn and uncached greedy decoding.

    Shapes:
        input_ids, attention_mask: (B, P); returns: bool, float
    '''
    tokens, logits, _ = generate_fn(model, input_ids, attention_mask, max_new_tokens, prefill_chunk)
    sequence, mask = input_ids, attention_mask
    ref_tokens, ref_logits = [], []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_logits = model(sequence, attention_mask=mask)[:, -1]  # (B, S, V) -> (B, V): everything again
            token = next_logits.argmax(dim=-1)  # (B,)
            ref_tokens.append(token)
            ref_logits.append(next_logits)
            sequence = torch.cat([sequence, token[:, None]], dim=1)  # (B, S) -> (B, S + 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    ref_tokens, ref_logits = torch.stack(ref_tokens, 1), torch.stack(ref_logits, 1)  # (B, N), (B, N, V)
    return bool(torch.equal(tokens[0], ref_tokens[0])), (logits[0] - ref_logits[0]).abs().max().item()
