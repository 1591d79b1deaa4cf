"""Keeps the preallocated buffers but rebuilds their contents with torch.cat at every update (copy_ of a concatenation), which the task forbids."""
# feedback: which the task forbids
# cell: kv_cache
class KVCache:
    '''Preallocated key/value cache of one attention layer.

    Shapes:
        self.k, self.v: (B, Hkv, capacity, D), allocated in __init__
        update: k, v (B, Hkv, T, D) -> k_all, v_all (B, Hkv, S, D), S = length after the update
    '''

    def __init__(self, batch_size, n_kv_heads, capacity, head_dim, dtype=torch.float32, device=None):
        self.batch_size, self.n_kv_heads = batch_size, n_kv_heads
        self.capacity, self.head_dim = capacity, head_dim
        shape = (batch_size, n_kv_heads, capacity, head_dim)  # (B, Hkv, capacity, D)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._length = 0

    @property
    def length(self):
        '''Number of positions cached so far (the next free slot).'''
        return self._length

    def update(self, k, v):
        '''Write k, v into slots [length, length + T); return everything cached so far.'''
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must both be (B, Hkv, T, D), got k {tuple(k.shape)}, v {tuple(v.shape)}")
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim):
            raise ValueError(f"k has (B, Hkv, D) = {(B, Hkv, D)}, the cache holds batch_size={self.batch_size}, "
                             f"n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}")
        end = self._length + T
        if end > self.capacity:
            raise ValueError(f"cache overflow: length {self._length} + T={T} > capacity {self.capacity}")
        self.k[:, :, :end].copy_(torch.cat([self.k[:, :, :self._length], k], dim=2))
        self.v[:, :, :end].copy_(torch.cat([self.v[:, :, :self._length], v], dim=2))
        self._length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, Hkv, S, D) views
