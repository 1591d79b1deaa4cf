"""Writes the pad id into the caller's input_ids in place."""
# feedback: input `input_ids` in place
# cell: greedy_generate
def greedy_generate(model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
    '''Greedy decoding with one KVCache per layer: prefill, then one token at a time.

    Shapes:
        input_ids, attention_mask: (B, P), left-padded, 1 = real token
        returns: tokens (B, N) long, logits (B, N, V), caches (n_layers KVCache)
    '''
    B, P = input_ids.shape
    input_ids[attention_mask == 0] = 0  # make sure the pads hold the pad id
    cfg = model.config
    caches = [KVCache(B, cfg.n_kv_heads, P + max_new_tokens, cfg.head_dim, dtype=model.lm_head.weight.dtype)
              for _ in range(cfg.n_layers)]
    chunk = P if prefill_chunk is None else prefill_chunk
    tokens, all_logits = [], []
    with torch.no_grad():
        for start in range(0, P, chunk):
            end = min(start + chunk, P)
            mask = attention_mask[:, :end]  # (B, S): the cached columns and this chunk's
            positions = position_ids(mask)[:, start:end]  # (B, T): continue from the cached ones
            logits = model.forward_with_mask(input_ids[:, start:end], decode_mask(mask, end - start), positions, caches)
        next_logits = logits[:, -1]  # (B, T, V) -> (B, V)
        mask = attention_mask
        for step in range(max_new_tokens):
            token = next_logits.argmax(dim=-1)  # (B,)
            tokens.append(token)
            all_logits.append(next_logits)
            if step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, S) -> (B, S + 1), pads stay 0
            positions = position_ids(mask)[:, -1:]  # (B, 1)
            next_logits = model.forward_with_mask(token[:, None], decode_mask(mask, 1), positions, caches)[:, -1]
    return torch.stack(tokens, dim=1), torch.stack(all_logits, dim=1), caches  # (B, N), (B, N, V)
