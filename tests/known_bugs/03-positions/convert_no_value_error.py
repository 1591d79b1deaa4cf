"""No check that the rows split into heads of an even size: reshape raises a RuntimeError, or odd heads are cut silently."""
# feedback: must raise ValueError
# cell: convert_meta_qk
def convert_meta_qk(w_q, w_k, n_heads, n_kv_heads):
    def per_head(w, heads):
        rows, width = w.shape
        D = rows // heads
        return w.reshape(heads, D // 2, 2, width).transpose(1, 2).reshape(rows, width).clone()

    return per_head(w_q, n_heads), per_head(w_k, n_kv_heads)
