"""Flattens each head with view, which works only on contiguous x: the transposed views split_heads returns (and the module's keys) raise."""
# feedback: non-contiguous
# cell: repeat_kv
def repeat_kv(x, n_rep):
    B, Hkv, S, D = x.shape
    flat = x.view(B, Hkv, 1, S * D)  # needs S and D contiguous
    return flat.expand(B, Hkv, n_rep, S * D).reshape(B, Hkv * n_rep, S, D)
