"""stable_softmax always normalises the last axis, whatever dim it is given."""
# feedback: do you use dim for the max and the sum?
# cell: stable_softmax
def stable_softmax(x, dim=-1):
    row_max = x.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exps = torch.exp(x - row_max)
    return exps / exps.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
