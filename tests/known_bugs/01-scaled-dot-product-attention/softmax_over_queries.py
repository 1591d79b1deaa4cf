"""Takes the softmax over the queries (dim=-2) instead of over the keys."""
# feedback: softmax runs over the queries
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-2)
    return weights @ v, weights
