"""Imports attnlab's attention_mask_for inside the answer, which the task forbids."""
# feedback: which the task forbids
# cell: decode_mask
def decode_mask(attention_mask, T):
    from attnlab import attention_mask_for

    return attention_mask_for(attention_mask, T)
