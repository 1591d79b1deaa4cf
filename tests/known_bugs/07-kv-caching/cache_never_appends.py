"""The cache checks its input but stores nothing: update returns only this call's keys and values."""
# feedback: your cache never appends
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
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must both be (B, Hkv, T, D), got k {tuple(k.shape)}, v {tuple(v.shape)}")
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim):
            raise ValueError(f"k has (B, Hkv, D) = {(B, Hkv, D)}, the cache holds {self.batch_size, self.n_kv_heads, self.head_dim}")
        end = self._length + T
        if end > self.capacity:
            raise ValueError(f"cache overflow: {self._length} + {T} > capacity {self.capacity}")
        return k, v
