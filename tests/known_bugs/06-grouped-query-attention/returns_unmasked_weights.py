"""Returns weights computed again without the mask: the output is right but the weights are not the ones that produced it."""
# feedback: the weights
# cell: grouped_query_attention
def grouped_query_attention(q, k, v, attn_mask=None):
    H, Hkv = q.shape[1], k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"query heads H={H} is not divisible by key/value heads Hkv={Hkv}")
    k = repeat_kv(k, H // Hkv)
    v = repeat_kv(v, H // Hkv)
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask)
    _, weights = scaled_dot_product_attention(q, k, v)  # for plotting: forgot the mask
    return out, weights
