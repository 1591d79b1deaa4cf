"""Scales q in place, changing the caller's tensor."""
# feedback: changed its input `q` in place
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    q /= math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
