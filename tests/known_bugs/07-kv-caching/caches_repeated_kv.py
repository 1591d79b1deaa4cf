"""Allocates caches for all H query heads and expands the Hkv key/value heads into them: the repeated K/V is cached, no memory saved."""
# feedback: stores repeated K/V heads
# cell: kv_cache
class KVCache:
    def __init__(self, batch_size, n_kv_heads, capacity, head_dim, dtype=torch.float32, device=None):
        self.batch_size, self.n_kv_heads = batch_size, n_kv_heads
        self.capacity, self.head_dim = capacity, head_dim
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._length = 0

    @property
    def length(self):
        return self._length

    def update(self, k, v):
        if k.dim() == 4 and k.shape[1] != self.n_kv_heads and self.n_kv_heads % k.shape[1] == 0:
            k = k.repeat_interleave(self.n_kv_heads // k.shape[1], dim=1)  # (B, Hkv, T, D) -> (B, H, T, D)
            v = v.repeat_interleave(self.n_kv_heads // v.shape[1], dim=1)
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must both be (B, Hkv, T, D), got k {tuple(k.shape)}, v {tuple(v.shape)}")
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim):
            raise ValueError(f"k has (B, Hkv, D) = {(B, Hkv, D)}, the cache holds {self.batch_size, self.n_kv_heads, self.head_dim}")
        end = self._length + T
        if end > self.capacity:
            raise ValueError(f"cache overflow: {self._length} + {T} > capacity {self.capacity}")
        self.k[:, :, self._length:end] = k
        self.v[:, :, self._length:end] = v
        self._length = end
        return self.k[:, :, :end], self.v[:, :, :end]
# cell: greedy_generate
def greedy_generate(model, input_ids, attention_mask, max_new_tokens, prefill_chunk=None):
    '''Greedy decoding with one KVCache per layer: prefill, then one token at a time.

    Shapes:
        input_ids, attention_mask: (B, P), left-padded, 1 = real token
        returns: tokens (B, N) long, logits (B, N, V), caches (n_layers KVCache)
    '''
    B, P = input_ids.shape
    cfg = model.config
    caches = [KVCache(B, cfg.n_heads, P + max_new_tokens, cfg.head_dim, dtype=model.lm_head.weight.dtype)
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
