"""Split-K merge: accumulates into the first partial's output, changing the caller's tensor."""
# feedback: changed its input `outputs[0]` in place
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
    merged = outputs[0].mul_(weights[0][..., None].to(outputs[0].dtype))  # (*, T, Dv)
    for i in range(1, len(outputs)):
        merged += weights[i][..., None] * outputs[i]
    return merged, lse  # (*, T, Dv), (*, T)
