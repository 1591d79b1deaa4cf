"""Computes and returns everything in float64: right values, but float16 inputs do not give float16 results."""
# feedback: the output has dtype torch.float64, expected torch.float16
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ v.double(), weights
