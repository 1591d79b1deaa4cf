"""Splits with view(B, T, D, H), so split_heads and merge_heads are not inverses and heads get strided channels."""
# feedback: view(B, T, D, H)
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    if C % n_heads != 0:
        raise ValueError(f"model width C={C} is not divisible by the number of heads H={n_heads}")
    return x.reshape(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)
