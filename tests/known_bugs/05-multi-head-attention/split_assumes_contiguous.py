"""split_heads reads x's storage with as_strided and the strides of a contiguous tensor: right for a contiguous x, wrong for a transposed or sliced one."""
# feedback: split_heads of a transposed x has wrong values
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    if C % n_heads != 0:
        raise ValueError(f"model width C={C} is not divisible by the number of heads H={n_heads}")
    D = C // n_heads
    return x.as_strided((B, n_heads, T, D), (T * C, D, C, 1), x.storage_offset())
