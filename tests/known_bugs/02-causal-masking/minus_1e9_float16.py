"""Masks with the constant -1e9, which does not fit in float16 (and leaves empty rows uniform, not zero)."""
# feedback: does not fit in float16
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~allowed, -1e9), dim=-1)
    return weights @ v, weights
