"""stable_softmax subtracts the max along dim but divides by the sum over dim 0, so rows do not sum to 1."""
# feedback: stable_softmax(x) has wrong values
# cell: stable_softmax
def stable_softmax(x, dim=-1):
    row_max = x.amax(dim=dim, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exps = torch.exp(x - row_max)
    return exps / exps.sum(dim=0, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
