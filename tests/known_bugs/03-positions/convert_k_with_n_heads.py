"""The key weight is permuted with n_heads instead of n_kv_heads: with grouped-query attention its heads are cut in the wrong places."""
# feedback: you permuted the key weight with n_heads
# cell: convert_meta_qk
def convert_meta_qk(w_q, w_k, n_heads, n_kv_heads):
    def per_head(w, heads):
        rows, width = w.shape
        if heads < 1 or rows % heads or (rows // heads) % 2:
            raise ValueError(f"a weight of {rows} rows cannot be cut into {heads} heads of an even size")
        D = rows // heads
        return w.reshape(heads, D // 2, 2, width).transpose(1, 2).reshape(rows, width).clone()

    per_head(w_k, n_kv_heads)  # the check passes...
    return per_head(w_q, n_heads), per_head(w_k, n_heads)  # ...but the key weight is cut into n_heads heads
