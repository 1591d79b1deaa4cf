"""Masks the output correctly but returns the weights computed before the mask: they did not make the output."""
# feedback: masked key must get weight 0
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    unmasked = stable_softmax(scores, dim=-1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, unmasked
