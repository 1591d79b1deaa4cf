"""Decodes without torch.no_grad(): every step records an autograd graph and keeps its activations alive."""
# feedback: torch.no_grad()
# cell: greedy_generate
def greedy_generate(model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
    B, P = input_ids.shape
    cfg = model.config
    caches = [KVCache(B, cfg.n_kv_heads, P + max_new_tokens, cfg.head_dim, dtype=model.lm_head.weight.dtype)
              for _ in range(cfg.n_layers)]
    chunk = P if prefill_chunk is None else prefill_chunk
    tokens, all_logits = [], []
    for start in range(0, P, chunk):
        end = min(start + chunk, P)
        mask = attention_mask[:, :end]
        positions = position_ids(mask)[:, start:end]
        logits = model.forward_with_mask(input_ids[:, start:end], decode_mask(mask, end - start), positions, caches)
    next_logits = logits[:, -1]
    mask = attention_mask
    for step in range(max_new_tokens):
        token = next_logits.argmax(dim=-1)
        tokens.append(token)
        all_logits.append(next_logits)
        if step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        positions = position_ids(mask)[:, -1:]
        next_logits = model.forward_with_mask(token[:, None], decode_mask(mask, 1), positions, caches)[:, -1]
    return torch.stack(tokens, dim=1), torch.stack(all_logits, dim=1), caches
