"""Zeroes the masked weights after the softmax instead of masking the logits before it."""
# feedback: you masked after the softmax
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
    return weights @ v, weights
