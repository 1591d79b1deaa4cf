"""Subtracts the row max even when it is -inf, so an all -inf row gives NaN."""
# feedback: not NaN
# cell: stable_softmax
def stable_softmax(x, dim=-1):
    exps = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return exps / exps.sum(dim=dim, keepdim=True)
