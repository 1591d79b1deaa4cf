"""Name the mistake behind a wrong head split, merge or multi-head module, for the graders' feedback
(chapter 5; chapter 6 reuses :func:`explain_multihead_mismatch` with fewer key/value heads).

Like :mod:`attnlab.diagnose`, each ``explain_*`` function recomputes the answer under every
classic mistake of the chapter and says which one reproduces the learner's output; when
several give that same output on the inputs at hand it names them all, and given a right
answer it says so. Otherwise it describes the symptom it sees.

Shape legend: ``B`` batch, ``T`` query positions, ``S`` key/value positions, ``H`` query
heads, ``Hkv`` key/value heads, ``G = H // Hkv``, ``D`` head dimension, ``C = H * D``.
"""

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from attnlab.attention import stable_softmax
from attnlab.heads import merge_heads, split_heads


def _attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float,
            mask_mode: str = "before") -> tuple[Tensor, Tensor]:
    """Attention with the given scale and way of applying the mask; returns (output, weights).

    Shapes:
        q: (B, H, T, D); k, v: (B, H, S, D); attn_mask broadcastable to (B, H, T, S)
        returns: (B, H, T, D), (B, H, T, S)
    """
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    if attn_mask is not None and mask_mode == "before":
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    if attn_mask is not None and mask_mode == "inverted":
        scores = scores.masked_fill(attn_mask, float("-inf"))
    if attn_mask is not None and mask_mode == "no head axis":  # (..., 1, T, S) -> (..., T, S): B lines up with H
        scores = scores.masked_fill(~attn_mask.squeeze(-3), float("-inf"))
    weights = stable_softmax(scores, dim=-1)  # (B, H, T, S)
    return weights @ v, weights  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)


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


def _named(matches: list[str], where: str, problem: str | None = None) -> str:
    """The symptom (if given) followed by the mistakes that reproduce it."""
    if len(matches) == 1:
        named = f"Looks like {matches[0]} ({where})."
    else:
        named = (f"Looks like one of these, which all give your output on these inputs ({where}): "
                 + "; or ".join(matches) + ".")
    return f"{problem}. {named}" if problem else named


def explain_split_mismatch(got: object, x: Tensor, n_heads: int, problem: str | None = None) -> str:
    """Name the mistake behind a wrong ``split_heads(x, n_heads)`` result.

    ``problem``, the symptom :func:`attnlab.testing.tensor_problem` found, is said first, or
    instead when no known mistake reproduces ``got``.

    Shapes:
        got: the learner's result; x: (B, T, C); expected (B, H, T, D)
    """
    batch, positions, width = x.shape
    d = width // n_heads
    want = (batch, n_heads, positions, d)
    where = f"x of shape {tuple(x.shape)}, H={n_heads}"
    if not isinstance(got, Tensor):
        return f"split_heads must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != want:
        viewed = x.reshape(batch, positions, n_heads, d)  # (B, T, C) -> (B, T, H, D)
        hints = [hint for wrong, hint in (
            (viewed, "you did not transpose: view as (B, T, H, D), then transpose(1, 2)"),
            (viewed.transpose(1, 3), "you transposed the wrong axes (1 and 3: T and D); transpose(1, 2) swaps T and H"),
        ) if wrong.shape == got.shape and torch.equal(got.detach().to(x.dtype), wrong)]
        hint = " or ".join(hints) or "view as (B, T, H, D), then transpose(1, 2)"
        return f"split_heads({where}) must have shape (B, H, T, D) = {want}, got {tuple(got.shape)}: {hint}"
    if got.dtype != x.dtype:
        return problem or f"split_heads must keep the dtype of x ({x.dtype}), got {got.dtype}"
    if torch.equal(got, split_heads(x, n_heads)):
        return problem or f"split_heads is right ({where})"
    matches = [description for how, description in SPLIT_MISTAKES.items()
               if torch.equal(got, _split_with(x, n_heads, how))]
    if matches:
        return _named(matches, where, problem)
    return problem or f"split_heads is wrong for {where}: head h must hold channels h*D ... h*D+D-1 of every position"


def explain_merge_mismatch(got: object, heads: Tensor, problem: str | None = None) -> str:
    """Name the mistake behind a wrong ``merge_heads(heads)`` result (``problem``: as for split).

    Shapes:
        got: the learner's result; heads: (B, H, T, D); expected (B, T, C)
    """
    batch, n_heads, positions, d = heads.shape
    want = (batch, positions, n_heads * d)
    where = f"heads of shape {tuple(heads.shape)}"
    if not isinstance(got, Tensor):
        return f"merge_heads must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != want:
        return f"merge_heads of shape {tuple(heads.shape)} must give (B, T, C) = {want}, got {tuple(got.shape)}"
    if got.dtype != heads.dtype:
        return problem or f"merge_heads must keep the dtype of its input ({heads.dtype}), got {got.dtype}"
    if torch.equal(got, merge_heads(heads)):
        return problem or f"merge_heads is right ({where})"
    matches = [description for how, description in MERGE_MISTAKES.items()
               if torch.equal(got, _merge_with(heads, how))]
    if matches:
        return _named(matches, where, problem)
    return problem or (f"merge_heads is not the inverse of split_heads for {where}: "
                       "head h must land on channels h*D ... h*D+D-1")


def multihead_mistakes(module, x: Tensor, n_heads: int, attn_mask: Tensor | None = None,
                       context: Tensor | None = None, n_kv_heads: int | None = None
                       ) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(description, output, weights)``: first the right answer (description ``""``),
    then each classic multi-head / grouped-query mistake.

    Uses the module's own ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``.

    Shapes:
        x: (B, T, C); context: (B, S, C) or None (then S = T)
        attn_mask: bool (T, S) or (B, T, S), True = may attend, shared by all heads
        each output: (B, T, C); each weights: (B, H, T, S)
    """
    src = x if context is None else context
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    group = n_heads // n_kv_heads
    width = x.shape[-1]
    d = width // n_heads
    mask = None if attn_mask is None else attn_mask.unsqueeze(-3)  # (..., T, S) -> (..., 1, T, S)
    with torch.no_grad():
        q = module.q_proj(x)

        def run(split="right", merge="right", scale=1.0 / math.sqrt(d), out_proj=True, expand="interleave",
                mask_mode="before", source=src):
            k, v = module.k_proj(source), module.v_proj(source)
            qh = _split_with(q, n_heads, split)  # (B, T, C) -> (B, H, T, D)
            kh, vh = _split_with(k, n_kv_heads, split), _split_with(v, n_kv_heads, split)  # (B, Hkv, S, D)
            if group > 1:  # (B, Hkv, S, D) -> (B, H, S, D)
                if expand == "interleave":
                    kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
                else:
                    kh, vh = kh.repeat(1, group, 1, 1), vh.repeat(1, group, 1, 1)
            heads, weights = _attend(qh, kh, vh, mask, scale, mask_mode)
            out = _merge_with(heads, merge)  # (B, H, T, D) -> (B, T, C)
            return (module.o_proj(out) if out_proj else out), weights

        yield ("", *run())
        yield ("you scaled the logits by 1/sqrt(C), C = the model width; the scale is 1/sqrt(D), "
               "D = C // H, the width of one head", *run(scale=1.0 / math.sqrt(width)))
        yield ("you scaled the logits twice (by 1/D instead of 1/sqrt(D)): scaled_dot_product_attention "
               "already divides by sqrt(D), so do not scale q or k yourself", *run(scale=1.0 / d))
        yield "you did not scale the logits: divide q·k by sqrt(D) of a head", *run(scale=1.0)
        yield "you forgot the output projection o_proj after merging the heads", *run(out_proj=False)
        if attn_mask is not None:
            yield "you ignored attn_mask", *run(mask_mode="ignore")
            if attn_mask.dim() == 3 and attn_mask.shape[0] == n_heads and n_heads > 1:
                yield ("you did not give attn_mask a head axis: a (B, T, S) mask then lines its batch axis up with "
                       "the heads; use attn_mask.unsqueeze(-3)", *run(mask_mode="no head axis"))
            yield ("you inverted attn_mask: True means 'may attend' (PyTorch's nn.MultiheadAttention uses "
                   "the opposite convention)", *run(mask_mode="inverted"))
        if context is not None:
            yield ("you projected the keys and values from x instead of context (cross-attention: keys and "
                   "values come from context)", *run(source=x))
        if group > 1 and n_kv_heads > 1:
            yield ("query head h is paired with K/V head h % Hkv (tiling with repeat, or grouping the query "
                   "heads in the wrong order) instead of K/V head h // G (repeat_interleave)", *run(expand="tile"))
        if n_heads > 1:
            yield SPLIT_MISTAKES["strided"], *run(split="strided", merge="strided")
            yield SPLIT_MISTAKES["no_transpose"], *run(split="no_transpose", merge="no_transpose")
            for how in ("strided", "no_transpose", "wrong_axes"):
                yield MERGE_MISTAKES[how], *run(merge=how)
            yield ("your split_heads and merge_heads are not inverses (split with view(B, T, D, H))",
                   *run(split="strided"))


def _where(x: Tensor, n_heads: int, attn_mask: Tensor | None, context: Tensor | None,
           n_kv_heads: int | None) -> str:
    s = x.shape[1] if context is None else context.shape[1]
    where = f"x {tuple(x.shape)}, S={s}, H={n_heads}, D={x.shape[-1] // n_heads}"
    where += "" if n_kv_heads is None else f", Hkv={n_kv_heads}"
    return where + ("" if attn_mask is None else f", mask {tuple(attn_mask.shape)}")


def explain_multihead_mismatch(got: object, module, x: Tensor, n_heads: int, attn_mask: Tensor | None = None,
                               context: Tensor | None = None, n_kv_heads: int | None = None,
                               problem: str | None = None) -> str:
    """A sentence naming the mistake that reproduces the module output ``got``, or the symptom
    (``problem``, from :func:`attnlab.testing.tensor_problem`, when given).

    Shapes:
        got: (B, T, C); x: (B, T, C); context: (B, S, C) or None; attn_mask (T, S) or (B, T, S)
    """
    where = _where(x, n_heads, attn_mask, context, n_kv_heads)
    if not isinstance(got, Tensor):
        return f"forward must return (output, weights) with a tensor output, got {type(got).__name__} ({where})"
    if tuple(got.shape) != tuple(x.shape):
        return f"output must have the shape of x, (B, T, C) = {tuple(x.shape)}, got {tuple(got.shape)} ({where})"
    got = got.detach()
    matches = []
    for description, wrong, _ in multihead_mistakes(module, x, n_heads, attn_mask, context, n_kv_heads):
        if torch.allclose(got.to(wrong.dtype), wrong, atol=1e-4, rtol=1e-3):
            if not description:
                return problem or f"the output is right ({where})"
            matches.append(description)
    if matches:
        return _named(matches, where, problem)
    return problem or f"output differs from PyTorch's ({where})"


def explain_mha_weights_mismatch(got_weights: object, got_output: object, module, x: Tensor, n_heads: int,
                                 attn_mask: Tensor | None = None, context: Tensor | None = None,
                                 problem: str | None = None) -> str:
    """Say what is wrong with the per-head attention weights a module returned.

    They must be PyTorch's, per head, and the very weights the output was computed from:
    ``o_proj(merge(weights @ split(v_proj(context or x))))`` must equal the output.

    Shapes:
        got_weights: (B, H, T, S); got_output: (B, T, C); x: (B, T, C); context: (B, S, C) or None
    """
    where = _where(x, n_heads, attn_mask, context, None)
    lead = f"{problem}. " if problem else ""
    B, T, _ = x.shape
    S = T if context is None else context.shape[1]
    if not isinstance(got_weights, Tensor):
        return problem or f"forward must return (output, weights) with tensor weights, got {type(got_weights).__name__}"
    if tuple(got_weights.shape) == (B, T, S) != (B, n_heads, T, S):
        return (f"{lead}The weights must be per head, (B, H, T, S) = {(B, n_heads, T, S)}, got {(B, T, S)}: "
                f"do not average them over the heads ({where})")
    if tuple(got_weights.shape) != (B, n_heads, T, S):
        return problem or f"the weights must have shape (B, H, T, S) = {(B, n_heads, T, S)}, got {tuple(got_weights.shape)}"
    candidates = list(multihead_mistakes(module, x, n_heads, attn_mask, context))
    weights = got_weights.detach().to(candidates[0][2].dtype)
    with torch.no_grad():
        v = _split_with(module.v_proj(x if context is None else context), n_heads)  # (B, S, C) -> (B, H, S, D)
        from_weights = module.o_proj(_merge_with(weights @ v))  # (B, H, T, S) @ (B, H, S, D) -> (B, T, C)
    consistent = isinstance(got_output, Tensor) and got_output.shape == from_weights.shape and torch.allclose(
        got_output.detach().to(from_weights.dtype), from_weights, atol=1e-4, rtol=1e-3)
    unlike_output = ("your output was not computed from the weights you return: o_proj(merge(weights @ v)) differs "
                     "from it; return the weights the output was computed from")
    if torch.allclose(weights, candidates[0][2], atol=1e-5, rtol=1e-4):
        return problem or f"the weights are right ({where})"
    matches = [d for d, _, wrong in candidates[1:] if torch.allclose(weights, wrong, atol=1e-5, rtol=1e-4)]
    if matches:
        return f"{lead}Your weights look like this mistake: {'; or '.join(matches)} ({where})."
    if not consistent:
        return f"{lead}{unlike_output[0].upper()}{unlike_output[1:]} ({where})."
    return problem or f"the per-head weights differ from PyTorch's ({where})"
