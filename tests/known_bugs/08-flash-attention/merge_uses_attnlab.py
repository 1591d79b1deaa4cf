"""Split-K merge: calls the package's attnlab.merge_partials instead of writing it."""
# feedback: your answer calls attnlab.flash.merge_partials
# cell: merge_partials
def merge_partials(outputs, lses):
    """Merge attention results over disjoint chunks of keys into the result over all of them.

    Shapes:
        outputs: n tensors (*, T, Dv); lses: n tensors (*, T)
        returns: output (*, T, Dv) in the outputs' dtype; lse (*, T), float32 or wider
    """
    from attnlab import merge_partials as merge

    return merge(outputs, lses)
