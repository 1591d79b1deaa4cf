"""Expands K/V heads with repeat (tiling), so query head h gets K/V head h % Hkv instead of h // G."""
# feedback: repeat_interleave
# cell: repeat_kv
def repeat_kv(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)
