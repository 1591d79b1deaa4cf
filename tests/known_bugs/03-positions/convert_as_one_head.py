"""All the rows permuted as one head: the permutation must work inside each head of D rows."""
# feedback: you permuted all the rows as one head
# cell: convert_meta_qk
def convert_meta_qk(w_q, w_k, n_heads, n_kv_heads):
    def per_head(w, heads):
        rows, width = w.shape
        if heads < 1 or rows % heads or (rows // heads) % 2:
            raise ValueError(f"a weight of {rows} rows cannot be cut into {heads} heads of an even size")
        D = rows // heads
        return w.reshape(1, rows // 2, 2, width).transpose(1, 2).reshape(rows, width).clone()

    return per_head(w_q, n_heads), per_head(w_k, n_kv_heads)
