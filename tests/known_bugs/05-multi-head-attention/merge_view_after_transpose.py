"""merge_heads transposes back and then calls view, which refuses the transposed (non-contiguous) tensor."""
# feedback: view needs a contiguous tensor
# cell: merge_heads
def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).view(B, T, H * D)
