"""Refuses the right updates, but its ValueError says only 'invalid update', naming no value."""
# feedback: must name
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
            raise ValueError("invalid update")
        end = self._length + T
        if end > self.capacity:
            raise ValueError("invalid update")
        self.k[:, :, self._length:end] = k  # (B, Hkv, T, D) copied into slots [length, end)
        self.v[:, :, self._length:end] = v
        self._length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, Hkv, S, D) views
