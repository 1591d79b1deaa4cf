"""Reshapes (B, T, C) straight into (B, H, T, D) (and back) without transposing, so heads mix positions."""
# feedback: without transposing
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    if C % n_heads != 0:
        raise ValueError(f"model width C={C} is not divisible by the number of heads H={n_heads}")
    return x.reshape(B, n_heads, T, C // n_heads)
# cell: merge_heads
def merge_heads(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)
