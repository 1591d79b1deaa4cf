"""Masks with -inf and uses torch.softmax, so a query with no allowed key (a pad query) gives NaN."""
# feedback: not softmax of all -inf
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ v, weights
