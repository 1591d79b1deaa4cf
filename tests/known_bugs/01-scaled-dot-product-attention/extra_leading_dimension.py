"""Returns the output with an extra leading dimension of size 1 (which torch.allclose would broadcast away)."""
# feedback: has shape (1,
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return (weights @ v).unsqueeze(0), weights
