"""Flattens the leading dims with view for torch.bmm: non-contiguous q, k, v (a head split's transpose) raise."""
# feedback: Use reshape, not view
# cell: causal_attention
def causal_attention(q, k, v, attn_mask=None):
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    lead = q.shape[:-2]
    allowed = causal_mask(T, S)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    scores = torch.bmm(q.view(-1, T, D), k.view(-1, S, D).transpose(1, 2)).view(*lead, T, S) / math.sqrt(D)
    weights = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    out = torch.bmm(weights.reshape(-1, T, S), v.view(-1, S, v.shape[-1])).view(*lead, T, v.shape[-1])
    return out, weights
