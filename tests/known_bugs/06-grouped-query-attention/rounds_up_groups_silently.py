"""Makes any H / Hkv fit by rounding G up and cutting the extra heads, instead of raising ValueError: H=6 over Hkv=4 runs with unequal groups."""
# feedback: must raise ValueError
# cell: grouped_query_attention
def grouped_query_attention(q, k, v, attn_mask=None):
    H = q.shape[1]
    G = -(-H // k.shape[1])  # ceil(H / Hkv)
    k = repeat_kv(k, G)[:, :H]
    v = repeat_kv(v, G)[:, :H]
    return scaled_dot_product_attention(q, k, v, attn_mask)
