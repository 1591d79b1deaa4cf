"""split_heads does not check C % H, so a bad width fails with PyTorch's RuntimeError instead of a ValueError naming C and H."""
# feedback: must raise ValueError
# cell: split_heads
def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(1, 2)
