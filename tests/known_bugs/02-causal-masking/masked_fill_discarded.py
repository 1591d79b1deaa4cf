"""Calls masked_fill but throws its result away, so the causal mask does nothing."""
# feedback: your mask has no effect
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores.masked_fill(~allowed, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
