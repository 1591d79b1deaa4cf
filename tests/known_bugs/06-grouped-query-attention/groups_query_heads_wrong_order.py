"""Groups the query heads as (G, Hkv) instead of (Hkv, G) without repeating K/V: query head h meets K/V head h % Hkv."""
# feedback: h % Hkv
# cell: grouped_query_attention
def grouped_query_attention(q, k, v, attn_mask=None):
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"query heads H={H} is not divisible by key/value heads Hkv={Hkv}")
    G = H // Hkv
    qg = q.reshape(B, G, Hkv, T, D)                        # wrong: should be (B, Hkv, G, T, D)
    scores = qg @ k[:, None].transpose(-2, -1) / math.sqrt(D)  # (B, G, Hkv, T, S)
    scores = scores.reshape(B, H, T, -1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights.reshape(B, G, Hkv, T, -1) @ v[:, None]
    return out.reshape(B, H, T, D), weights
