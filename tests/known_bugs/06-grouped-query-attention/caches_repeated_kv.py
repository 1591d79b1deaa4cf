"""Expands K/V to H heads before updating the cache: the cache holds H heads and no memory is saved."""
# feedback: saves no memory
# cell: GroupedQueryAttention
class GroupedQueryAttention(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, bias=True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model C={d_model} is not divisible by n_heads H={n_heads}")
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads H={n_heads} is not divisible by n_kv_heads Hkv={n_kv_heads}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim, self.bias = d_model // n_heads, bias
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, attn_mask=None, cache=None):
        G = self.n_heads // self.n_kv_heads
        q = split_heads(self.q_proj(x), self.n_heads)
        k = repeat_kv(split_heads(self.k_proj(x), self.n_kv_heads), G)
        v = repeat_kv(split_heads(self.v_proj(x), self.n_kv_heads), G)
        if cache is not None:
            k, v = cache.update(k, v)
        if attn_mask is not None:
            attn_mask = attn_mask.unsqueeze(-3)
        out, weights = scaled_dot_product_attention(q, k, v, attn_mask)
        return self.o_proj(merge_heads(out)), weights
