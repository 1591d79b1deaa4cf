"""Applies the mask to the weights after the softmax, so rows no longer sum to 1."""
# feedback: masked after the softmax
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores, dim=-1)
    if attn_mask is not None:
        weights = weights.masked_fill(~attn_mask, 0.0)
    return weights @ v, weights
