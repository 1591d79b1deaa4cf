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
from attnlab.diagnose_gqa import explain_gqa_mismatch, explain_pooling_mismatch, explain_repeat_kv_mismatch  # noqa: F401
from attnlab.diagnose_kv_cache import (  # noqa: F401  (chapter 7, re-exported)
    GENERATION_MISTAKES,
    explain_cache_update,
    explain_generation_mismatch,
    greedy_with_mistake,
)
from attnlab.heads import merge_heads, split_heads
from attnlab.masks import causal_mask, padding_mask, position_ids


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


def causal_mask_mistakes(T: int, S: int):
    """Yield ``(description, mask)`` for each classic causal-mask mistake with T queries, S keys.

    Shapes:
        each mask: (T, S), dtype bool, True = may attend
    """
    ones = torch.ones(T, S, dtype=torch.bool)
    offset = S - T
    yield "you used triu where tril was meant: queries see the future and not the past", ones.triu(offset)
    yield "you used triu where tril was meant: queries see the future and not the past", ones.triu()
    yield "your diagonal is off by one: each query also sees the next key (the future)", ones.tril(offset + 1)
    yield "your diagonal is off by one: each query cannot see its own key", ones.tril(offset - 1)
    if T != S:
        yield (
            "your causal mask is aligned to the top-left (like is_causal=True); with T != S the queries are "
            "the LAST T of S positions: query i sits at S - T + i, use tril(diagonal=S - T)",
            ones.tril(),
        )
    yield "your mask is inverted: True means 'may attend' (PyTorch's convention)", ~causal_mask(T, S)


def explain_causal_mask_mismatch(got: object, T: int, S: int) -> str:
    """A sentence naming the mistake that reproduces a wrong causal mask ``got`` for (T, S)."""
    if not isinstance(got, Tensor):
        return f"causal_mask({T}, {S}) must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != (T, S):
        return f"causal_mask({T}, {S}) must have shape (T, S) = ({T}, {S}), got {tuple(got.shape)}"
    if got.dtype != torch.bool:
        return f"causal_mask({T}, {S}) must be a bool tensor (True = may attend), got dtype {got.dtype}"
    for description, wrong in causal_mask_mistakes(T, S):
        if torch.equal(got, wrong):
            return f"Looks like {description} (T={T}, S={S})."
    bad = (got != causal_mask(T, S)).nonzero()[:3].tolist()
    return f"causal_mask({T}, {S}) is wrong at (query, key) = {bad}: query i may see keys j <= S - T + i"


def causal_attention_mistakes(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None):
    """Yield ``(description, output)`` for classic mistakes of causal (+ extra mask) attention.

    The right answer is attention under ``causal & attn_mask`` with the offset-aware
    causal mask (query ``i`` at position ``S - T + i``).

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        each output: (*, T, Dv)
    """
    T, S = q.shape[-2], k.shape[-2]
    extra = torch.ones(T, S, dtype=torch.bool) if attn_mask is None else attn_mask
    for description, wrong_causal in causal_mask_mistakes(T, S):
        yield description, _attention_with(q, k, v, wrong_causal & extra)
    if attn_mask is not None:
        yield (
            "you dropped the extra (padding) mask: combine it with the causal mask (causal & attn_mask)",
            _attention_with(q, k, v, causal_mask(T, S)),
        )
        yield (
            "you used only the extra mask and forgot the causal mask",
            _attention_with(q, k, v, attn_mask),
        )
    full = causal_mask(T, S) & extra
    for description, wrong in attention_mistakes(q, k, v, full):
        yield description, wrong


def explain_causal_attention_mismatch(
    got: object, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None
) -> str:
    """A sentence naming the mistake that reproduces ``got`` for causal attention, or a hint.

    Shapes:
        got: (*, T, Dv); q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
    """
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if attn_mask is not None:
        shapes += f", attn_mask {tuple(attn_mask.shape)}"
    if not isinstance(got, Tensor):
        return f"expected a tensor output, got {type(got).__name__} (for {shapes})"
    expected_shape = (*q.shape[:-1], v.shape[-1])
    if tuple(got.shape) != expected_shape:
        return f"output has shape {tuple(got.shape)}, expected {expected_shape} (for {shapes})"
    if torch.isnan(got).any():
        return (f"output contains NaN (for {shapes}): a query row with no allowed key must give zeros, "
                "not softmax of all -inf = 0/0 = NaN")
    if not torch.isfinite(got).all():
        return f"output contains inf (for {shapes})"
    q32, k32, v32 = q.float(), k.float(), v.float()
    atol = 1e-4 if q.dtype == torch.float32 else 3e-2
    for description, wrong in causal_attention_mistakes(q32, k32, v32, attn_mask):
        if torch.allclose(got.float(), wrong, atol=atol, rtol=1e-3):
            return f"Looks like {description} (for {shapes})."
    return f"output differs from attention under the offset-aware causal mask (for {shapes})"


# ----------------------------------------------------------------- chapter 4: padding


def padded_mask_mistakes(attention_mask: Tensor, T: int):
    """Yield ``(description, mask)`` for classic mistakes combining causal and padding masks.

    Shapes:
        attention_mask: (B, S), 1 = real token; each mask: (B, 1, T, S), dtype bool
    """
    B, S = attention_mask.shape
    keys = (attention_mask != 0)[:, None, None, :]  # (B, 1, 1, S)
    causal = causal_mask(T, S)
    yield (
        "you dropped the padding mask: queries attend to pad keys",
        causal.expand(B, 1, T, S),
    )
    yield "you forgot the causal mask: queries see future tokens", keys.expand(B, 1, T, S)
    if T != S:
        yield (
            "your causal part is aligned to the top-left (like is_causal=True); the T queries are the last T "
            "of the S positions: use tril(diagonal=S - T)",
            keys & torch.ones(T, S, dtype=torch.bool).tril(),
        )
    yield "your causal diagonal is off by one", keys & torch.ones(T, S, dtype=torch.bool).tril(S - T + 1)
    yield "you used triu where tril was meant", keys & torch.ones(T, S, dtype=torch.bool).triu(S - T)
    queries = (attention_mask != 0)[:, None, -T:, None]  # (B, 1, T, 1)
    yield (
        "you masked the pad queries (rows) instead of the pad keys (columns)",
        queries & causal,
    )


def explain_padded_mask_mismatch(got: object, attention_mask: Tensor, T: int) -> str:
    """A sentence naming the mistake that reproduces a wrong (B, 1, T, S) causal+padding mask."""
    B, S = attention_mask.shape
    if not isinstance(got, Tensor):
        return f"expected a bool tensor, got {type(got).__name__}"
    if got.dtype != torch.bool:
        return f"the mask must be a bool tensor (True = may attend), got dtype {got.dtype}"
    if tuple(got.shape) != (B, 1, T, S):
        return f"the mask must have shape (B, 1, T, S) = {(B, 1, T, S)}, got {tuple(got.shape)}"
    for description, wrong in padded_mask_mistakes(attention_mask, T):
        if torch.equal(got, wrong):
            return f"Looks like {description} (attention_mask {tuple(attention_mask.shape)}, T={T})."
    return (f"the mask is wrong (attention_mask {tuple(attention_mask.shape)}, T={T}): query i (at position "
            "S - T + i) may see key j when j <= S - T + i AND key j is a real token")


def explain_position_ids_mismatch(got: object, attention_mask: Tensor) -> str:
    """A sentence naming the mistake that reproduces wrong position ids for ``attention_mask``."""
    if not isinstance(got, Tensor):
        return f"expected a tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(attention_mask.shape):
        return f"position ids must have the shape of attention_mask {tuple(attention_mask.shape)}, got {tuple(got.shape)}"
    if got.dtype != torch.long:
        return f"position ids must be torch.long (they index a table), got {got.dtype}"
    real = attention_mask != 0
    count = real.long().cumsum(-1)
    S = attention_mask.shape[-1]
    if torch.equal(got, torch.arange(S).expand_as(got)):
        return ("Looks like your position ids were not shifted for left padding: you used arange(S), so a "
                "left-padded sequence starts at the number of pads instead of 0. Count only real tokens.")
    if torch.equal(got[real], count[real]):
        return "your positions start at 1: the first real token is at position 0 (cumsum - 1)"
    if torch.equal(got[real], (count - 1)[real]):
        return "the real tokens' positions are right, but pad positions must be 0"
    return "wrong position ids: each real token gets the number of real tokens before it (0, 1, 2, ...); pads get 0"


# ------------------------------------------------------------------ heads (chapters 5, 6)
def _split_with(x: Tensor, n_heads: int, how: str = "right") -> Tensor:
    """Head split done right or with one classic mistake.

    Shapes:
        x: (B, T, C) -> (B, H, T, D), D = C // H
    """
    batch, positions, width = x.shape
    d = width // n_heads
    if how == "strided":  # (B, T, C) -> (B, T, D, H) -> (B, H, T, D): head h gets channels h, h+H, ...
        return x.reshape(batch, positions, d, n_heads).permute(0, 3, 1, 2)
    if how == "no_transpose":  # (B, T, C) viewed straight as (B, H, T, D): heads mix positions
        return x.reshape(batch, n_heads, positions, d)
    return split_heads(x, n_heads)  # (B, T, C) -> (B, H, T, D)


def _merge_with(x: Tensor, how: str = "right") -> Tensor:
    """Head merge done right or with one classic mistake.

    Shapes:
        x: (B, H, T, D) -> (B, T, C), C = H * D
    """
    batch, n_heads, positions, d = x.shape
    if how == "strided":  # (B, H, T, D) -> (B, T, D, H) -> (B, T, C)
        return x.permute(0, 2, 3, 1).reshape(batch, positions, n_heads * d)
    if how == "no_transpose":  # (B, H, T, D) reshaped straight to (B, T, C)
        return x.reshape(batch, positions, n_heads * d)
    if how == "wrong_axes":  # (B, H, T, D) -> (B, H, D, T) -> (B, T, C)
        return x.transpose(2, 3).reshape(batch, positions, n_heads * d)
    return merge_heads(x)  # (B, H, T, D) -> (B, T, C)


SPLIT_MISTAKES = {
    "strided": "you split with view(B, T, D, H): head h gets the strided channels h, h+H, h+2H, ... "
    "instead of the D consecutive channels h*D ... h*D+D-1; view as (B, T, H, D), then transpose(1, 2)",
    "no_transpose": "you reshaped (B, T, C) straight to (B, H, T, D) without transposing, so heads mix "
    "positions; view as (B, T, H, D), then transpose(1, 2)",
}
MERGE_MISTAKES = {
    "strided": "your merge_heads puts head h on the strided channels h, h+H, ... (a (B, T, D, H) layout): "
    "it is not the inverse of split_heads; transpose(1, 2) back to (B, T, H, D), then reshape",
    "no_transpose": "your merge_heads reshapes (B, H, T, D) straight to (B, T, C) without transposing back: "
    "it is not the inverse of split_heads",
    "wrong_axes": "your merge_heads transposes the wrong axes (T and D instead of H and T): "
    "it is not the inverse of split_heads; use transpose(1, 2)",
}


def explain_split_mismatch(got: Tensor, x: Tensor, n_heads: int) -> str:
    """Name the mistake behind a wrong ``split_heads(x, n_heads)`` result.

    Shapes:
        got: the learner's result; x: (B, T, C); expected (B, H, T, D)
    """
    batch, positions, width = x.shape
    want = (batch, n_heads, positions, width // n_heads)
    if not isinstance(got, Tensor):
        return f"split_heads must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != want:
        return (f"split_heads(x of shape {tuple(x.shape)}, H={n_heads}) must have shape (B, H, T, D) = {want}, "
                f"got {tuple(got.shape)}: did you transpose the wrong axes? transpose(1, 2) swaps T and H")
    for how, description in SPLIT_MISTAKES.items():
        if torch.equal(got, _split_with(x, n_heads, how)):
            return f"Looks like {description} (x of shape {tuple(x.shape)}, H={n_heads})."
    return (f"split_heads is wrong for x of shape {tuple(x.shape)}, H={n_heads}: head h must hold "
            f"channels h*D ... h*D+D-1 of every position")


def explain_merge_mismatch(got: Tensor, heads: Tensor) -> str:
    """Name the mistake behind a wrong ``merge_heads(heads)`` result.

    Shapes:
        got: the learner's result; heads: (B, H, T, D); expected (B, T, C)
    """
    batch, n_heads, positions, d = heads.shape
    want = (batch, positions, n_heads * d)
    if not isinstance(got, Tensor):
        return f"merge_heads must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != want:
        return f"merge_heads of shape {tuple(heads.shape)} must give (B, T, C) = {want}, got {tuple(got.shape)}"
    for how, description in MERGE_MISTAKES.items():
        if torch.equal(got, _merge_with(heads, how)):
            return f"Looks like {description} (heads of shape {tuple(heads.shape)})."
    return (f"merge_heads is not the inverse of split_heads for heads of shape {tuple(heads.shape)}: "
            "head h must land on channels h*D ... h*D+D-1")


def multihead_mistakes(module, x: Tensor, n_heads: int, attn_mask: Tensor | None = None,
                       context: Tensor | None = None, n_kv_heads: int | None = None):
    """Yield ``(description, output)`` for each classic multi-head / grouped-query mistake.

    Uses the module's own ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``.

    Shapes:
        x: (B, T, C); context: (B, S, C) or None (then S = T)
        attn_mask: bool (T, S) or (B, T, S), True = may attend, shared by all heads
        each output: (B, T, C)
    """
    src = x if context is None else context
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    group = n_heads // n_kv_heads
    width = x.shape[-1]
    d = width // n_heads
    mask = None if attn_mask is None else attn_mask.unsqueeze(-3)  # (..., T, S) -> (..., 1, T, S)
    with torch.no_grad():
        q, k, v = module.q_proj(x), module.k_proj(src), module.v_proj(src)

        def run(split="right", merge="right", scale=1.0 / math.sqrt(d), out_proj=True, expand="interleave"):
            qh = _split_with(q, n_heads, split)
            kh, vh = _split_with(k, n_kv_heads, split), _split_with(v, n_kv_heads, split)
            if group > 1:  # (B, Hkv, S, D) -> (B, H, S, D)
                if expand == "interleave":
                    kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
                else:
                    kh, vh = kh.repeat(1, group, 1, 1), vh.repeat(1, group, 1, 1)
            out = _merge_with(_attention_with(qh, kh, vh, mask, scale=scale), merge)
            return module.o_proj(out) if out_proj else out

        yield ("you scaled the logits by 1/sqrt(C), C = the model width; the scale is 1/sqrt(D), "
               "D = C // H, the width of one head", run(scale=1.0 / math.sqrt(width)))
        yield "you did not scale the logits: divide q·k by sqrt(D) of a head", run(scale=1.0)
        yield "you forgot the output projection o_proj after merging the heads", run(out_proj=False)
        if group > 1 and n_kv_heads > 1:
            yield ("query head h is paired with K/V head h % Hkv (tiling with repeat, or grouping the query "
                   "heads in the wrong order) instead of K/V head h // G (repeat_interleave)", run(expand="tile"))
        if n_heads > 1:
            yield SPLIT_MISTAKES["strided"], run(split="strided", merge="strided")
            yield (SPLIT_MISTAKES["no_transpose"], run(split="no_transpose", merge="no_transpose"))
            for how in ("strided", "no_transpose", "wrong_axes"):
                yield MERGE_MISTAKES[how], run(merge=how)
            yield ("your split_heads and merge_heads are not inverses (split with view(B, T, D, H))",
                   run(split="strided"))


def explain_multihead_mismatch(got: Tensor, module, x: Tensor, n_heads: int, attn_mask: Tensor | None = None,
                               context: Tensor | None = None, n_kv_heads: int | None = None) -> str:
    """A sentence naming the mistake that reproduces the module output ``got``, or a generic hint.

    Shapes:
        got: (B, T, C); x: (B, T, C); context: (B, S, C) or None; attn_mask (T, S) or (B, T, S)
    """
    s = x.shape[1] if context is None else context.shape[1]
    where = f"x {tuple(x.shape)}, S={s}, H={n_heads}" + ("" if n_kv_heads is None else f", Hkv={n_kv_heads}")
    if attn_mask is not None:
        where += f", mask {tuple(attn_mask.shape)}"
    if not isinstance(got, Tensor):
        return f"forward must return (output, weights) with a tensor output, got {type(got).__name__} ({where})"
    if tuple(got.shape) != tuple(x.shape):
        return f"output must have the shape of x, (B, T, C) = {tuple(x.shape)}, got {tuple(got.shape)} ({where})"
    for description, wrong in multihead_mistakes(module, x, n_heads, attn_mask, context, n_kv_heads):
        if torch.allclose(got, wrong, atol=1e-4, rtol=1e-3):
            return f"Looks like {description} ({where})."
    return f"output differs from PyTorch's ({where})"
