"""The cache grows by torch.cat instead of writing into buffers preallocated at construction."""
# feedback: grows by concatenation
# cell: kv_cache
class KVCache:
    def __init__(self, batch_size, n_kv_heads, capacity, head_dim, dtype=torch.float32, device=None):
        self.batch_size, self.n_kv_heads = batch_size, n_kv_heads
        self.capacity, self.head_dim = capacity, head_dim
        empty = (batch_size, n_kv_heads, 0, head_dim)
        self.k = torch.zeros(empty, dtype=dtype, device=device)
        self.v = torch.zeros(empty, dtype=dtype, device=device)

    @property
    def length(self):
        return self.k.shape[2]

    def update(self, k, v):
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must both be (B, Hkv, T, D), got k {tuple(k.shape)}, v {tuple(v.shape)}")
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim):
            raise ValueError(f"k has (B, Hkv, D) = {(B, Hkv, D)}, the cache holds {self.batch_size, self.n_kv_heads, self.head_dim}")
        if self.length + T > self.capacity:
            raise ValueError(f"cache overflow: {self.length} + {T} > capacity {self.capacity}")
        self.k = torch.cat([self.k, k], dim=2)
        self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v
