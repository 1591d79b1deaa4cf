"""Loops forever on large logits: the grader interrupts those cells, they score 0, grading goes on."""
# feedback: the time limit per cell
# cell: stable_softmax
def stable_softmax(x, dim=-1):
    while x.max() > 50:  # meant to shift the logits down, but never changes x
        x = x - 0
    exps = torch.exp(x - x.amax(dim=dim, keepdim=True).clamp_min(-1e30))
    return exps / exps.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
