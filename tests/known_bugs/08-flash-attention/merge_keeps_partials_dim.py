"""Split-K merge: sums over the partials with keepdim=True, returning an extra leading dimension of size 1."""
# feedback: has shape (1, 
# cell: merge_partials
def merge_partials(outputs, lses):
    """Merge attention results over disjoint chunks of keys into the result over all of them.

    Shapes:
        outputs: n tensors (*, T, Dv); lses: n tensors (*, T)
        returns: output (*, T, Dv) in the outputs' dtype; lse (*, T), float32 or wider
    """
    work = torch.promote_types(outputs[0].dtype, torch.float32)
    o = torch.stack(outputs)  # n x (*, T, Dv) -> (n, *, T, Dv); the float32 weights below promote it
    lse_i = torch.stack(lses).to(work)  # n x (*, T) -> (n, *, T)
    lse = torch.logsumexp(lse_i, dim=0)  # (*, T); -inf where every partial is empty
    weights = torch.exp(lse_i - lse.clamp_min(torch.finfo(work).min))  # (n, *, T): shares that sum to 1 (or 0)
    return (weights[..., None] * o).sum(dim=0, keepdim=True).to(outputs[0].dtype), lse  # (*, T, Dv), (*, T)
