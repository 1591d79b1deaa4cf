"""Adds the head axis with unsqueeze_, in place: the caller's attn_mask changes shape."""
# feedback: in place
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
        q = split_heads(self.q_proj(x), self.n_heads)
        k = split_heads(self.k_proj(x), self.n_kv_heads)
        v = split_heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        if attn_mask is not None:
            attn_mask = attn_mask.unsqueeze_(-3)  # (..., T, S) -> (..., 1, T, S), in place
        out, weights = grouped_query_attention(q, k, v, attn_mask)
        return self.o_proj(merge_heads(out)), weights
