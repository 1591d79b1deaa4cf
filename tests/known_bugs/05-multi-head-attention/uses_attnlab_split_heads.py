"""Wraps attnlab's split_heads instead of writing its own, which the task forbids."""
# feedback: attnlab.split_heads
# cell: split_heads
def split_heads(x, n_heads):
    from attnlab.heads import split_heads as package_split
    if x.shape[-1] % n_heads != 0:
        raise ValueError(f"model width C={x.shape[-1]} is not divisible by the number of heads H={n_heads}")
    return package_split(x, n_heads)
