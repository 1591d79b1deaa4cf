"""causal_attention builds its own mask with tril(S - T) and never checks T <= S: T > S silently gives zeros."""
# feedback: must raise ValueError
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    allowed = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ v, weights
