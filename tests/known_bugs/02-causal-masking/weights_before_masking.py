"""The output is right, but the returned weights are the softmax before masking: forbidden keys keep their weight."""
# feedback: the weights of forbidden keys must be 0
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores, dim=-1)  # returned: the unmasked weights
    out = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    return out, weights
