"""Hands forward to torch.nn.MultiheadAttention loaded with its own weights, which the task forbids."""
# feedback: which the task forbids
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
        mha = nn.MultiheadAttention(self.d_model, self.n_heads, bias=self.q_proj.bias is not None, batch_first=True)
        mha = mha.to(x.dtype).eval()
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            mha.out_proj.weight.copy_(self.o_proj.weight)
            if self.q_proj.bias is not None:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
                mha.out_proj.bias.copy_(self.o_proj.bias)
        mask = None
        if attn_mask is not None:
            mask = ~attn_mask if attn_mask.dim() == 2 else (~attn_mask).repeat_interleave(self.n_heads, 0)
        return mha(x, source, source, attn_mask=mask, average_attn_weights=False)
