"""Uses k.T, which reverses *all* dims: it raises on batched inputs, so that part scores 0 and grading goes on."""
# feedback: RuntimeError
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
