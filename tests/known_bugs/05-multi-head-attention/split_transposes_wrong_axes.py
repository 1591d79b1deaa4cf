"""split_heads transposes axes 1 and 3 (T and D) instead of 1 and 2, giving (B, D, H, T)."""
# feedback: transposed the wrong axes
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    if C % n_heads != 0:
        raise ValueError(f"model width C={C} is not divisible by the number of heads H={n_heads}")
    return x.reshape(B, T, n_heads, C // n_heads).transpose(1, 3)
