"""Flattens the leading dims with .view() to use torch.bmm: transposed (non-contiguous) inputs raise."""
# feedback: view size is not compatible
# cell: scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, attn_mask=None):
    *lead, T, D = q.shape
    S, Dv = k.shape[-2], v.shape[-1]
    q3, k3, v3 = q.view(-1, T, D), k.view(-1, S, D), v.view(-1, S, Dv)
    scores = torch.bmm(q3, k3.transpose(1, 2)).view(*lead, T, S) / math.sqrt(D)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
