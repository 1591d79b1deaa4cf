"""Checks with plain messages, for the assignments' tests and the grader's own checks.

A result is checked in the order a learner can act on: is it a tensor at all, then its shape,
then its dtype, then its values. The first thing wrong is the message; a wrong dtype is not
reported as "Double did not match Float" from deep inside a comparison.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def tensor_problem(actual, expected, what="the result", *, exact_dtype=True, atol=1e-5, rtol=1e-4, kind=None):
    """None if ``actual`` matches ``expected``, else one sentence saying what is wrong.

    ``kind`` names the type ``actual`` had where it was made, when that is not ``type(actual)``
    (the grader rebuilds tensors that crossed the sandbox wall).

    Shapes:
        actual, expected: any shape; they must be equal.
    """
    kind = kind or (f"{type(actual).__module__}.{type(actual).__qualname__}" if isinstance(actual, torch.Tensor)
                    else type(actual).__name__)
    if not isinstance(actual, torch.Tensor):
        return f"{what} should be a tensor, got a {kind}"
    if kind != "torch.Tensor":
        return f"{what} is a {kind}: return a plain torch.Tensor"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if exact_dtype and actual.dtype != expected.dtype:
        return f"{what} has dtype {actual.dtype}, expected {expected.dtype} (the dtype of the inputs)"
    if actual.device != expected.device:
        return f"{what} is on {actual.device}, expected {expected.device}"
    if expected.dtype == torch.bool or actual.dtype == torch.bool:
        wrong = (actual.to(torch.bool) != expected.to(torch.bool)).nonzero()
        if len(wrong):
            return f"{what} is wrong at {len(wrong)} of {expected.numel()} places, first at {wrong[0].tolist()}"
        return None
    got = actual.detach().to(expected.dtype)
    finite = torch.isfinite(expected)
    if not torch.equal(torch.isnan(got), torch.isnan(expected)):
        where = (torch.isnan(got) != torch.isnan(expected)).nonzero()[0].tolist()
        return f"{what} has NaN where it should not (or a number where NaN was expected), first at {where}"
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True) | (~finite & (got == expected))
    if not close.all():
        wrong = (~close).nonzero()
        first = wrong[0].tolist()
        worst = (got.double() - expected.double()).abs()[finite].nan_to_num(float("inf")).max().item() \
            if finite.any() else float("nan")
        return (f"{what} has wrong values at {len(wrong)} of {expected.numel()} places (first at {first}: "
                f"{got[tuple(first)].item():.6g} instead of {expected[tuple(first)].item():.6g}; "
                f"largest difference {worst:.3g}, allowed {atol:g} + {rtol:g} x |expected|)")
    return None


def expect_tensor(actual, expected, what="the result", *, exact_dtype=True, atol=1e-5, rtol=1e-4, explain=None):
    """Assert :func:`tensor_problem` finds nothing; its sentence is the assertion message.

    ``explain``, if given, is called for a message when only the values are wrong (a diagnosis
    that names the classic mistake behind them).
    """
    problem = tensor_problem(actual, expected, what, exact_dtype=exact_dtype, atol=atol, rtol=rtol)
    if problem is not None and explain is not None and "wrong values" in problem:
        problem = f"{problem}. {explain()}"
    assert problem is None, problem


# The aten operators behind the library calls an assignment may forbid (torch.softmax,
# F.softmax, Tensor.softmax; F.scaled_dot_product_attention on every backend).
SOFTMAX_OPS = frozenset({"aten::_softmax", "aten::_log_softmax", "aten::_safe_softmax"})
SDPA_OPS = frozenset({
    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_fused_attention_overrideable",
    "aten::_fused_sdp_choice",
})


class OpRecorder(TorchDispatchMode):
    """Records the name of every aten operator run inside it (``with OpRecorder() as ops: ...``)."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def ops_called(fn, *args, **kwargs):
    """The aten operators ``fn(*args, **kwargs)`` runs, e.g. {"aten::exp", "aten::sum", ...}."""
    with OpRecorder() as recorder:
        fn(*args, **kwargs)
    return recorder.ops


def expect_unchanged(named_before, named_after):
    """Assert that every input (name -> the tensor afterwards) equals its copy made before the call."""
    for name, before in named_before.items():
        after = named_after[name]
        assert after.shape == before.shape and after.dtype == before.dtype and torch.equal(after, before), (
            f"your code changed its input `{name}` in place: work on new tensors, the caller's must not change")
