"""No check for a number of heads below 1: n_heads=0 divides by zero instead of raising ValueError."""
# feedback: ZeroDivisionError
# cell: convert_meta_qk
def convert_meta_qk(w_q, w_k, n_heads, n_kv_heads):
    def per_head(w, heads):
        rows, width = w.shape
        if rows % heads or (rows // heads) % 2:
            raise ValueError(f"a weight of {rows} rows cannot be cut into {heads} heads of an even head dimension D")
        D = rows // heads
        return w.reshape(heads, D // 2, 2, width).transpose(1, 2).reshape(rows, width).clone()

    return per_head(w_q, n_heads), per_head(w_k, n_kv_heads)
