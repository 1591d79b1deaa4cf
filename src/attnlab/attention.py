"""Scaled dot-product attention (chapter 1).

Shape legend: ``B`` batch, ``H`` heads, ``T`` query positions, ``S`` key/value
positions, ``D`` head dimension. Leading dimensions (``B``, ``H``, ...) are
written ``*`` below: any number of them, equal for ``q``, ``k`` and ``v``.

Two ways to attend live here. :func:`scaled_dot_product_attention` is the
teaching version: every step written out, and it returns the attention
weights. :func:`fast_attention` returns only the output and hands the work to
PyTorch's fused ``torch.nn.functional.scaled_dot_product_attention`` (which
never materialises the ``(T, S)`` weights when a fused kernel applies), with
the course's conventions: the causal mask is offset-aware (queries are the
last ``T`` of ``S`` positions) and grouped key/value heads are not copied.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.masks import causal_mask


def stable_softmax(logits: Tensor, dim: int = -1) -> Tensor:
    """Softmax that neither overflows on large logits nor returns NaN on empty rows.

    Subtracting the row maximum leaves the result unchanged mathematically
    (``softmax(x) = softmax(x - c)``) but keeps every ``exp`` argument ``<= 0``,
    so nothing overflows. A row whose entries are all ``-inf`` (a query that may
    attend to nothing) gives all zeros instead of ``0 / 0 = NaN``.

    Shapes:
        logits: any shape; the softmax runs along ``dim``.
        returns: the same shape as ``logits``.
    """
    if not logits.is_floating_point():
        raise ValueError(f"stable_softmax needs a floating-point tensor, got dtype {logits.dtype}")
    row_max = logits.amax(dim=dim, keepdim=True)
    # A row of all -inf has max -inf; shift it by 0 instead so exp() gives zeros, not NaN.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exps = torch.exp(logits - row_max)
    total = exps.sum(dim=dim, keepdim=True)
    return exps / total.clamp_min(torch.finfo(logits.dtype).tiny)


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise ``ValueError`` naming the shapes if ``q``, ``k``, ``v`` cannot be attended.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv) with the same leading dims ``*``.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dims (..., positions, dim), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k, v must share their leading (batch, head) dims, got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim D, got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of positions S, got {shapes}")


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without changing ``target``.

    The same answer as ``torch.broadcast_shapes(shape, target) == target``, in
    plain Python: a few microseconds cheaper, which counts in a per-call check.

    Shapes:
        shape: (*a); target: (*b), len(a) <= len(b), each a[i] 1 or equal to b's aligned size
    """
    if len(shape) > len(target):
        return False
    return all(size == 1 or size == want for size, want in zip(reversed(shape), reversed(target)))


def check_mask(attn_mask: Tensor, scores_shape: torch.Size) -> None:
    """Raise ``ValueError`` unless ``attn_mask`` is boolean and broadcasts to the scores.

    Shapes:
        attn_mask: broadcastable to ``scores_shape`` = (*, T, S); True = may attend.
    """
    if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
        kind = attn_mask.dtype if isinstance(attn_mask, Tensor) else type(attn_mask).__name__
        raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got {kind}")
    if not broadcasts_to(attn_mask.shape, scores_shape):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the "
            f"attention scores of shape {tuple(scores_shape)} (*, T, S)"
        )


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + mask) v`` with ``scale = 1 / sqrt(D)`` by default.

    ``attn_mask`` is boolean, True where a query may attend to a key (PyTorch's
    convention). The mask is applied to the logits *before* the softmax. A query
    row with no allowed key gets zero weights and a zero output, never NaN.
    The inputs are not modified.

    Shapes:
        q: (*, T, D)
        k: (*, S, D)
        v: (*, S, Dv)
        attn_mask: broadcastable to (*, T, S)
        returns: output (*, T, Dv), weights (*, T, S)
    """
    check_qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale  # (*, T, D) @ (*, D, S) -> (*, T, S)
    if attn_mask is not None:
        check_mask(attn_mask, scores.shape)
        if attn_mask.device != scores.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {scores.device}")
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)  # (*, T, S), each row sums to 1 (or 0 if empty)
    return weights @ v, weights  # (*, T, S) @ (*, S, Dv) -> (*, T, Dv)


def sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """:func:`fast_attention` without the checks, for code that already checked its inputs.

    ``causal`` adds the offset-aware causal mask. PyTorch's ``is_causal=True``
    aligns its triangle to the top-left, which is right only when ``T == S``,
    so it is used only then (and only without ``attn_mask``); one query
    (``T == 1``) is the last position and sees every key, so it needs no mask;
    otherwise the bottom-right triangle ``tril(ones(T, S), S - T)`` is built.
    Fewer key/value heads than query heads use ``enable_gqa=True``, which
    reads each key/value head for its group instead of copying it.

    Shapes:
        q: (*, H, T, D); k: (*, Hkv, S, D); v: (*, Hkv, S, Dv), H % Hkv == 0
        attn_mask: bool, True = may attend, broadcastable to (*, H, T, S)
        returns: (*, H, T, Dv)
    """
    T, S = q.shape[-2], k.shape[-2]
    if causal and T > 1:
        if attn_mask is None and T == S:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[-3] != k.shape[-3]
            )
        below = causal_mask(T, S, device=q.device)  # (T, S) bottom-right
        attn_mask = below if attn_mask is None else attn_mask & below
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=q.shape[-3] != k.shape[-3]
    )


def fast_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Attention output only, by PyTorch's fused kernel, with the course's conventions.

    Equal to ``scaled_dot_product_attention(q, k, v, mask, scale)[0]`` (to
    rounding) where ``mask`` is ``attn_mask`` and, with ``causal=True``, the
    offset-aware causal mask :func:`attnlab.masks.causal_mask`. ``k`` and ``v``
    may have fewer heads than ``q`` (grouped-query attention): query head
    ``h`` uses key/value head ``h // (H // Hkv)``, as ``repeat_kv`` does, but
    nothing is copied. A query that may attend to nothing gets a zero output on
    the CPU (PyTorch's fused kernels return zeros there; on CUDA some kernels
    return other finite values: such rows mean nothing either way).

    Shapes:
        q: (*, H, T, D); k: (*, Hkv, S, D); v: (*, Hkv, S, Dv), H % Hkv == 0
        attn_mask: bool, True = may attend, broadcastable to (*, H, T, S)
        returns: (*, H, T, Dv)
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or x.dim() < 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor (*, heads, positions, dim), got {shape}")
    *lead, heads, T, D = q.shape
    *k_lead, kv_heads, S, k_dim = k.shape
    heads_fit = kv_heads > 0 and heads % kv_heads == 0 and v.shape[-3] == kv_heads
    leads_fit = lead == k_lead and v.shape[:-3] == k.shape[:-3]
    if not (heads_fit and leads_fit and D == k_dim and v.shape[-2] == S):
        shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"  # formatted only to raise
        if not heads_fit:
            raise ValueError(f"q's heads must be a multiple of k's and v's (equal) heads, got {shapes}")
        if not leads_fit:
            raise ValueError(f"q, k, v must share their leading (batch) dims, got {shapes}")
        raise ValueError(f"q and k need one head dim D, k and v one number of positions S, got {shapes}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share a floating-point dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if causal and T > S:
        raise ValueError(f"causal attention needs T <= S (queries are the last T of S positions), got T={T}, S={S}")
    if attn_mask is not None:
        check_mask(attn_mask, (*q.shape[:-1], S))
        if attn_mask.device != q.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {q.device}")
    return sdpa(q, k, v, attn_mask, causal, scale)
