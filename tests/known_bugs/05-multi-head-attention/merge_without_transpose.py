"""merge_heads reshapes (B, H, T, D) to (B, T, C) without transposing back: not the inverse of split_heads."""
# feedback: without transposing back
# cell: merge_heads
def merge_heads(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)
