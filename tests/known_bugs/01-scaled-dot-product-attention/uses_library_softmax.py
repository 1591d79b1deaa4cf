"""Calls torch.softmax inside stable_softmax, which the task forbids: right values, but not the learner's own softmax."""
# feedback: compute the softmax yourself
# cell: stable_softmax
def stable_softmax(x, dim=-1):
    return torch.softmax(x, dim=dim)
