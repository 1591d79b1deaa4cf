"""Adds a float32 mask of -1e9 to the logits: float16 inputs come back as float32, and empty rows are not zero."""
# feedback: has dtype torch.float32, expected torch.float16
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    additive = (~allowed).float() * -1e9
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + additive
    weights = torch.softmax(scores, dim=-1)
    return weights @ v.to(weights.dtype), weights
