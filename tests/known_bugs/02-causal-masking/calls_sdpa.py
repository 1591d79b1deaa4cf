"""causal_attention hands the output to F.scaled_dot_product_attention, which the task forbids."""
# feedback: your answers call ['F.scaled_dot_product_attention']
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    empty = ~allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | empty).masked_fill(empty, 0.0)
    return out, weights
