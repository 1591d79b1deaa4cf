"""Reuses the original q_proj and o_proj modules instead of copying them: training the converted layer changes the original."""
# feedback: shares its storage
# cell: mha_to_gqa
def mha_to_gqa(mha, n_kv_heads):
    H, D, C = mha.n_heads, mha.head_dim, mha.d_model
    if mha.n_kv_heads != H:
        raise ValueError(f"mha must be multi-head, got Hkv={mha.n_kv_heads}, H={H}")
    if n_kv_heads < 1 or H % n_kv_heads != 0:
        raise ValueError(f"n_heads H={H} is not divisible by n_kv_heads Hkv={n_kv_heads}")
    G = H // n_kv_heads
    gqa = GroupedQueryAttention(C, H, n_kv_heads, bias=mha.bias)
    gqa.q_proj, gqa.o_proj = mha.q_proj, mha.o_proj
    with torch.no_grad():
        for source, target in ((mha.k_proj, gqa.k_proj), (mha.v_proj, gqa.v_proj)):
            target.weight.copy_(source.weight.reshape(n_kv_heads, G, D, C).mean(dim=1).reshape(-1, C))
            if source.bias is not None:
                target.bias.copy_(source.bias.reshape(n_kv_heads, G, D).mean(dim=1).reshape(-1))
    return gqa
