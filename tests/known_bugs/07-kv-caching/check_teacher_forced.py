"""The uncached run is fed the cached decoder's tokens instead of its own argmax (teacher forcing): after a wrong token it follows the wrong sequence, so max_diff is not the one the task defines."""
# feedback: appends its own greedy token
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
            sequence = torch.cat([sequence, tokens[:, len(ref_tokens) - 1, None]], dim=1)  # (B, S) -> (B, S + 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    ref_tokens, ref_logits = torch.stack(ref_tokens, 1), torch.stack(ref_logits, 1)  # (B, N), (B, N, V)
    return bool(torch.equal(tokens, ref_tokens)), (logits - ref_logits).abs().max().item()
