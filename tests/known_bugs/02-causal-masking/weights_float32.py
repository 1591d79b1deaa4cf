"""Computes in float32 for stability and casts the output back, but returns the weights in float32."""
# feedback: the tensor of weights has dtype torch.float32, expected torch.float16
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return (weights @ v.float()).to(q.dtype), weights
