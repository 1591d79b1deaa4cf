"""Calls attnlab.generate_with_logits for the tokens and logits, which the task forbids, and fills its own caches with one pass over prompt and tokens."""
# feedback: which the task forbids
# cell: greedy_generate
def greedy_generate(model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
    import attnlab

    B, P = input_ids.shape
    cfg = model.config
    tokens, logits = attnlab.generate_with_logits(model, input_ids, attention_mask, max_new_tokens)
    caches = [KVCache(B, cfg.n_kv_heads, P + max_new_tokens, cfg.head_dim, dtype=model.lm_head.weight.dtype)
              for _ in range(cfg.n_layers)]
    sequence = torch.cat([input_ids, tokens[:, :-1]], dim=1)  # (B, P + N - 1): everything fed back
    mask = torch.cat([attention_mask, attention_mask.new_ones(B, max_new_tokens - 1)], dim=1)
    with torch.no_grad():
        model.forward_with_mask(sequence, decode_mask(mask, sequence.shape[1]), position_ids(mask), caches)
    return tokens, logits, caches
