"""Name the mistake behind a wrong answer, for the graders' feedback.

A hidden test knows the right answer; when a learner's output differs, these
functions recompute the output under each classic mistake of the chapter (see
the brief's bug catalogue) and say which one reproduces it. The candidate
mistakes are written here once, so every notebook gives the same advice.
Chapters 6 and 7 live in :mod:`attnlab.diagnose_gqa` and :mod:`attnlab.diagnose_kv_cache`;
their names are re-exported here.
"""

import math

import torch
from torch import Tensor

from attnlab.attention import stable_softmax
from attnlab.diagnose_causal import (  # noqa: F401  (chapter 2, re-exported)
    causal_attention_mistakes,
    causal_mask_mistakes,
    explain_causal_attention_mismatch,
    explain_causal_mask_mismatch,
)
from attnlab.diagnose_gqa import explain_gqa_mismatch, explain_pooling_mismatch, explain_repeat_kv_mismatch  # noqa: F401
from attnlab.diagnose_kv_cache import (  # noqa: F401  (chapter 7, re-exported)
    GENERATION_MISTAKES,
    explain_cache_update,
    explain_generation_mismatch,
    greedy_with_mistake,
)


def _attention_with(q, k, v, attn_mask=None, scale=None, softmax_dim=-1, mask_mode="before"):
    """Attention with one knob turned the wrong way; returns the output only.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        returns: (*, T, Dv)
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (*, T, D) @ (*, D, S) -> (*, T, S)
    if attn_mask is not None and mask_mode == "before":
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    if attn_mask is not None and mask_mode == "inverted":
        scores = scores.masked_fill(attn_mask, float("-inf"))
    weights = stable_softmax(scores, dim=softmax_dim)
    if attn_mask is not None and mask_mode == "after":
        weights = weights.masked_fill(~attn_mask, 0.0)
    return weights @ v  # (*, T, S) @ (*, S, Dv) -> (*, T, Dv)


def attention_mistakes(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None):
    """Yield ``(description, output)`` for each classic scaled-dot-product mistake.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        each output: (*, T, Dv)
    """
    D, S = q.shape[-1], k.shape[-2]
    yield "you divided the logits by D instead of sqrt(D)", _attention_with(q, k, v, attn_mask, scale=1.0 / D)
    yield "you did not scale the logits: divide q·k by sqrt(D)", _attention_with(q, k, v, attn_mask, scale=1.0)
    yield "you multiplied by sqrt(D) instead of dividing", _attention_with(q, k, v, attn_mask, scale=math.sqrt(D))
    if S != D:
        yield (
            "you scaled by sqrt(S), the number of keys; the scale is 1/sqrt(D), D = q.shape[-1]",
            _attention_with(q, k, v, attn_mask, scale=1.0 / math.sqrt(S)),
        )
    yield (
        "your softmax runs over the queries (dim=-2); it must run over the keys (dim=-1) so each row sums to 1",
        _attention_with(q, k, v, attn_mask, softmax_dim=-2),
    )
    if attn_mask is not None:
        yield (
            "your mask has no effect: did you discard the result of masked_fill (it is not in place)?",
            _attention_with(q, k, v, None),
        )
        yield (
            "you masked after the softmax: mask the logits with -inf before it, so allowed weights still sum to 1",
            _attention_with(q, k, v, attn_mask, mask_mode="after"),
        )
        yield (
            "your mask is inverted: True means 'may attend' (PyTorch's convention)",
            _attention_with(q, k, v, attn_mask, mask_mode="inverted"),
        )


def explain_attention_mismatch(got: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> str:
    """A sentence naming the mistake that reproduces ``got``, or a generic hint.

    Shapes:
        got: (*, T, Dv), the learner's output for these inputs
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
    """
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if attn_mask is not None:
        shapes += f", mask {tuple(attn_mask.shape)}"
    if not isinstance(got, Tensor):
        return f"expected a tensor output, got {type(got).__name__} (for {shapes})"
    expected_shape = (*q.shape[:-1], v.shape[-1])
    if tuple(got.shape) != expected_shape:
        return f"output has shape {tuple(got.shape)}, expected {expected_shape} (for {shapes})"
    if not torch.isfinite(got).all():
        return f"output contains NaN or inf (for {shapes}): is your softmax stable?"
    for description, wrong in attention_mistakes(q, k, v, attn_mask):
        if torch.allclose(got.to(wrong.dtype), wrong, atol=1e-4, rtol=1e-3):
            return f"Looks like {description} (for {shapes})."
    return f"output differs from torch.nn.functional.scaled_dot_product_attention (for {shapes})"


# ----------------------------------------------------------------- chapter 2: causal masks
# moved to attnlab.diagnose_causal; the names stay importable from here.


# ----------------------------------------------------------------- chapter 4: padding
# Moved to attnlab.diagnose_padding; re-exported here under the old names.
from attnlab.diagnose_padding import (  # noqa: E402, F401
    explain_padded_mask_mismatch,
    explain_position_ids_mismatch,
    padded_mask_mistakes,
)


# ------------------------------------------------------------------ heads (chapters 5, 6)
# Split, merge and the multi-head module moved to attnlab.diagnose_heads; re-exported here.
from attnlab.diagnose_heads import (  # noqa: E402, F401
    MERGE_MISTAKES,
    SPLIT_MISTAKES,
    explain_merge_mismatch,
    explain_multihead_mismatch,
    explain_split_mismatch,
    multihead_mistakes,
)
