"""Combines the masks in place with &=, changing the caller's attn_mask."""
# feedback: changed the caller's attn_mask in place
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    if attn_mask is None:
        allowed = causal_mask(T, S)
    else:
        attn_mask &= causal_mask(T, S)
        allowed = attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
