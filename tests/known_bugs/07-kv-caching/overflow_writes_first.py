"""The cache writes the new positions before checking the capacity, so a refused update leaves a changed cache."""
# feedback: refused update
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
        B, Hkv, T, D = k.shape
        end = self._length + T
        self.k[:, :, self._length:end] = k[:, :, : self.capacity - self._length]
        self.v[:, :, self._length:end] = v[:, :, : self.capacity - self._length]
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim) or k.shape != v.shape:
            raise ValueError(f"k has (B, Hkv, D) = {(B, Hkv, D)}, the cache holds {self.batch_size, self.n_kv_heads, self.head_dim}")
        if end > self.capacity:
            self._length = self.capacity
            raise ValueError(f"cache overflow: {end} > capacity {self.capacity}")
        self._length = end
        return self.k[:, :, :end], self.v[:, :, :end]
