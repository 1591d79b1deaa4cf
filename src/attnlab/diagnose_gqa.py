"""Name the mistake behind a wrong grouped-query answer, for the graders' feedback (chapter 6).

Like :mod:`attnlab.diagnose`, each ``explain_*`` function is called once a test has seen a
wrong answer: it reports what is wrong in the order a learner can act on (not a tensor, wrong
shape, wrong dtype, NaN), then recomputes the answer under each classic mistake of the chapter
and names the one that reproduces it; otherwise it describes the symptom. It never names a
mistake whose output equals the right answer for these inputs.

Shape legend: ``B`` batch, ``T`` queries, ``S`` keys, ``H`` query heads, ``Hkv`` key/value
heads, ``G = H // Hkv``, ``D`` head dimension, ``C`` model width.
"""

import torch
from torch import Tensor

from attnlab.attention import scaled_dot_product_attention


def _tensor_or_shape_problem(got: object, want_shape: tuple, what: str) -> str | None:
    if not isinstance(got, Tensor):
        return f"{what} must be a tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(want_shape):
        return f"{what} must have shape {tuple(want_shape)}, got {tuple(got.shape)}"
    return None


def explain_repeat_kv_mismatch(got: object, x: Tensor, n_rep: int) -> str:
    """Name the mistake behind a wrong ``repeat_kv(x, n_rep)``.

    Shapes:
        x: (B, Hkv, S, D); expected (B, Hkv * n_rep, S, D)
    """
    where = f"x {tuple(x.shape)}, n_rep={n_rep}"
    want = (x.shape[0], x.shape[1] * n_rep, *x.shape[2:])
    problem = _tensor_or_shape_problem(got, want, f"repeat_kv({where})")
    if problem:
        return problem
    if got.dtype != x.dtype:
        return f"repeat_kv({where}) returned dtype {got.dtype}: keep the dtype of x, {x.dtype}"
    right = x.repeat_interleave(n_rep, dim=1)
    tiled = x.repeat(1, n_rep, 1, 1)
    if torch.equal(got, tiled) and not torch.equal(tiled, right):
        return (f"Looks like you used repeat (tiling: output head h = K/V head h % Hkv) instead of "
                f"repeat_interleave (output head h = K/V head h // n_rep) ({where}).")
    bad = [h for h in range(want[1]) if not torch.equal(got[:, h], right[:, h])]
    return f"repeat_kv is wrong for {where} at output heads {bad}: output head h must be input head h // n_rep"


def explain_gqa_mismatch(got: object, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> str:
    """Name the mistake behind a wrong grouped-query attention output.

    Shapes:
        q: (B, H, T, D); k, v: (B, Hkv, S, D); attn_mask broadcastable to (B, H, T, S); got (B, H, T, D)
    """
    group = q.shape[1] // k.shape[1]
    where = f"q {tuple(q.shape)}, k {tuple(k.shape)}" + ("" if attn_mask is None else f", mask {tuple(attn_mask.shape)}")
    problem = _tensor_or_shape_problem(got, q.shape, f"the output (the shape of q, (B, H, T, D)) for {where}")
    if problem:
        return problem
    if not torch.isfinite(got).all():
        return f"your output contains NaN or inf ({where})"
    right, _ = scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask)
    if k.shape[1] > 1 and group > 1:
        tiled, _ = scaled_dot_product_attention(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), attn_mask)
        if torch.allclose(got.to(tiled.dtype), tiled, atol=1e-4, rtol=1e-3) and not torch.allclose(tiled, right):
            return (f"Looks like query head h is paired with K/V head h % Hkv (tiling with repeat, or grouping "
                    f"the query heads in the wrong order) instead of K/V head h // G (repeat_interleave) ({where}).")
    from attnlab.diagnose import explain_attention_mismatch  # chapter 1's mistakes, on the expanded heads

    return explain_attention_mismatch(got, q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                      attn_mask)


def explain_pooling_mismatch(got: object, weight: Tensor, n_kv_heads: int, head_dim: int) -> str:
    """Name the mistake behind a wrong mean-pooled K or V projection weight (MHA -> GQA).

    Shapes:
        weight: (H * D, C) of the original; got: (Hkv * D, C) expected
    """
    rows, width = weight.shape
    n_heads = rows // head_dim
    group = n_heads // n_kv_heads
    want = (n_kv_heads * head_dim, width)
    where = f"H={n_heads}, Hkv={n_kv_heads}, D={head_dim}"
    if not isinstance(got, Tensor) or tuple(got.shape) != want:
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        return (f"the pooled k_proj/v_proj weight must have shape (Hkv * D, C) = {want}, got {shape}: "
                f"keep only Hkv key/value heads, or no memory is saved ({where})")
    heads = weight.reshape(n_heads, head_dim, width)
    right = heads.reshape(n_kv_heads, group, head_dim, width).mean(1).reshape(want)
    candidates = {
        "you pooled interleaved heads h, h+Hkv, h+2*Hkv, ... instead of the consecutive heads "
        "g*G ... g*G+G-1 of each group": heads.reshape(group, n_kv_heads, head_dim, width).mean(0),
        "you kept the first head of each group instead of the mean":
            heads.reshape(n_kv_heads, group, head_dim, width)[:, 0],
        "you summed the heads of each group instead of averaging them":
            heads.reshape(n_kv_heads, group, head_dim, width).sum(1),
    }
    for description, wrong in candidates.items():
        wrong = wrong.reshape(want)
        if torch.allclose(got.to(wrong.dtype), wrong, atol=1e-6) and not torch.allclose(wrong, right, atol=1e-6):
            return f"Looks like {description} ({where})."
    return f"pooled weight is wrong ({where}): K/V head g must be the mean of the original heads g*G ... g*G+G-1"
