"""Divides q by sqrt(D) and then calls scaled_dot_product_attention, which divides by sqrt(D) again: the logits are scaled by 1/D."""
# feedback: scaled the logits twice
# cell: MultiHeadAttention
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model C={d_model} is not divisible by n_heads H={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, attn_mask=None, context=None):
        source = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)
        k = split_heads(self.k_proj(source), self.n_heads)
        v = split_heads(self.v_proj(source), self.n_heads)
        if attn_mask is not None:
            attn_mask = attn_mask.unsqueeze(-3)
        out, weights = scaled_dot_product_attention(q / math.sqrt(self.head_dim), k, v, attn_mask)
        return self.o_proj(merge_heads(out)), weights
