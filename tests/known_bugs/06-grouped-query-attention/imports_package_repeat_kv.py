"""Imports attnlab's repeat_kv inside the answer, which the task forbids."""
# feedback: which the task forbids
# cell: repeat_kv
def repeat_kv(x, n_rep):
    from attnlab import repeat_kv as package_repeat_kv

    return package_repeat_kv(x, n_rep)
