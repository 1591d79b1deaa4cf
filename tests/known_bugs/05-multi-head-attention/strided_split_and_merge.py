"""A consistent pair built on (B, T, D, H): it round-trips, but head h owns channels h, h+H, ... unlike PyTorch."""
# feedback: view(B, T, D, H)
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    if C % n_heads != 0:
        raise ValueError(f"model width C={C} is not divisible by the number of heads H={n_heads}")
    return x.reshape(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)
# cell: merge_heads
def merge_heads(x):
    B, H, T, D = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, D * H)
