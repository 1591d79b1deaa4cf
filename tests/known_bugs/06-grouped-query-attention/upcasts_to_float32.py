"""Computes in float32 for stability and returns float32 whatever the input dtype (float16 and float64 inputs come back as float32)."""
# feedback: has dtype torch.float32
# cell: grouped_query_attention
def grouped_query_attention(q, k, v, attn_mask=None):
    H, Hkv = q.shape[1], k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"query heads H={H} is not divisible by key/value heads Hkv={Hkv}")
    k = repeat_kv(k, H // Hkv).float()
    v = repeat_kv(v, H // Hkv).float()
    return scaled_dot_product_attention(q.float(), k, v, attn_mask)
