"""Name the mistake behind a wrong causal mask or causal attention, for the graders' feedback (chapter 2).

Each ``explain_*`` function checks what a learner returned in the order they can act on
(a tensor at all, its shape, its dtype, then its values); for wrong values it recomputes the
answer under every classic mistake of the chapter and names the one that reproduces it. When
several mistakes give the same output on these inputs it names them all; when none does it
describes the symptom seen (where it is wrong), never a mistake it did not see.

Shape legend: ``B`` batch, ``H`` heads, ``T`` queries (the last T of S positions), ``S`` keys,
``D`` head dimension, ``Dv`` value dimension.
"""

import math

import torch
from torch import Tensor

from attnlab.attention import stable_softmax
from attnlab.masks import causal_mask
from attnlab.testing import tensor_problem


def _masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, after: bool = False) -> Tensor:
    """Attention under ``allowed`` (True = may attend); rows with no allowed key give zeros.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); allowed broadcastable to (*, T, S)
        returns: (*, T, Dv)
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (*, T, D) @ (*, D, S) -> (*, T, S)
    if allowed is None:
        return stable_softmax(scores, dim=-1) @ v
    if after:
        return stable_softmax(scores, dim=-1).masked_fill(~allowed, 0.0) @ v
    return stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v  # (*, T, S) @ (*, S, Dv)


def _looks_like(matches: list[str], setting: str) -> str:
    """One sentence for the descriptions that reproduce a wrong answer (several if they coincide)."""
    unique = list(dict.fromkeys(matches))
    if len(unique) == 1:
        return f"Looks like {unique[0]} ({setting})."
    return f"Looks like one of these ({setting}, they give the same result here): " + "; or ".join(unique) + "."


# ------------------------------------------------------------------ the mask


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
    """A sentence naming the mistake that reproduces a wrong causal mask ``got`` for (T, S).

    Shapes:
        got: expected (T, S), dtype bool
    """
    call = f"causal_mask({T}, {S})"
    want = causal_mask(T, S)
    problem = tensor_problem(got, want, call)
    if problem and (not isinstance(got, Tensor) or tuple(got.shape) != (T, S) or got.dtype != torch.bool):
        return f"{problem} (True = may attend)" if "dtype" in problem else problem
    matches = [d for d, wrong in causal_mask_mistakes(T, S) if not torch.equal(wrong, want) and torch.equal(got, wrong)]
    if matches:
        return _looks_like(matches, f"T={T}, S={S}")
    bad = (got != want).nonzero()[:3].tolist()
    return f"{call} is wrong at (query, key) = {bad}: query i may see keys j <= S - T + i"


# ------------------------------------------------------------------ the attention


def causal_attention_mistakes(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None):
    """Yield ``(description, output)`` for classic mistakes of causal (+ extra mask) attention.

    The right answer is attention under ``causal & attn_mask`` with the offset-aware
    causal mask (query ``i`` at position ``S - T + i``); rows with no allowed key give zeros.

    Shapes:
        q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
        each output: (*, T, Dv)
    """
    from attnlab.diagnose import attention_mistakes  # chapter 1's mistakes (scale, softmax axis, ...)

    T, S = q.shape[-2], k.shape[-2]
    extra = torch.ones(T, S, dtype=torch.bool) if attn_mask is None else attn_mask
    full = causal_mask(T, S) & extra
    yield ("your mask has no effect: did you discard the result of masked_fill (it is not in place)?",
           _masked_attention(q, k, v, None))
    for description, wrong_causal in causal_mask_mistakes(T, S):
        yield description, _masked_attention(q, k, v, wrong_causal & extra)
    if attn_mask is not None:
        yield ("you dropped the extra (padding) mask: combine it with the causal mask (causal & attn_mask)",
               _masked_attention(q, k, v, causal_mask(T, S)))
        yield "you used only the extra mask and forgot the causal mask", _masked_attention(q, k, v, attn_mask)
    yield ("you masked after the softmax: mask the logits with -inf before it, so allowed weights still sum to 1",
           _masked_attention(q, k, v, full, after=True))
    for description, wrong in attention_mistakes(q, k, v, full):
        if "no effect" not in description and "after the softmax" not in description:
            yield description, wrong


def _allowed(q: Tensor, k: Tensor, attn_mask: Tensor | None) -> Tensor:
    """The keys each query may see: the offset-aware causal mask and the extra mask.

    Shapes:
        returns: broadcastable to (*, T, S)
    """
    T, S = q.shape[-2], k.shape[-2]
    return causal_mask(T, S) if attn_mask is None else causal_mask(T, S) & attn_mask


def _empty_rows(q: Tensor, k: Tensor, attn_mask: Tensor | None) -> Tensor:
    """True for the queries that may see no key at all (the pad queries of a left-padded batch).

    Shapes:
        returns: broadcastable to (*, T, 1)
    """
    return ~_allowed(q, k, attn_mask).any(-1, keepdim=True)


def explain_causal_attention_mismatch(
    got: object, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, exact_dtype: bool = True
) -> str:
    """A sentence naming the mistake that reproduces ``got`` for causal attention, or the symptom.

    ``exact_dtype=False``: a dtype other than the inputs' is not a mistake here (values only).

    Shapes:
        got: (*, T, Dv); q: (*, T, D); k: (*, S, D); v: (*, S, Dv); attn_mask broadcastable to (*, T, S)
    """
    setting = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if attn_mask is not None:
        setting += f", attn_mask {tuple(attn_mask.shape)}"
    q32, k32, v32 = q.float(), k.float(), v.float()
    want32 = _masked_attention(q32, k32, v32, _allowed(q, k, attn_mask))
    want = want32.to(q.dtype)
    problem = tensor_problem(got, want, "the output", exact_dtype=exact_dtype)
    if problem and (not isinstance(got, Tensor) or tuple(got.shape) != tuple(want.shape)
                    or (exact_dtype and got.dtype != want.dtype)):
        return f"{problem} (for {setting})"
    got32 = got.detach().float()
    empty = _empty_rows(q, k, attn_mask).expand(got.shape[:-1] + (1,))  # (*, T, 1)
    if torch.isnan(got32).any():
        if (torch.isnan(got32) <= empty).all():
            return (f"the query rows with no allowed key (pad queries) gave NaN (for {setting}): such a row must "
                    "give zero weights and a zero output, not softmax of all -inf = 0/0 = NaN")
        return f"the output contains NaN in rows that do have allowed keys (for {setting})"
    if not torch.isfinite(got32).all():
        return f"the output contains inf (for {setting})"
    atol = 1e-4 if q.dtype == torch.float32 else 3e-2
    matches = [d for d, wrong in causal_attention_mistakes(q32, k32, v32, attn_mask)
               if not torch.allclose(wrong, want32, atol=1e-6, rtol=1e-5)  # no mistake on these inputs
               and torch.allclose(got32, wrong, atol=atol, rtol=1e-3)]
    if matches:
        return _looks_like(matches, f"for {setting}")
    if empty.any():
        rows = got32.masked_select(empty).view(-1, got.shape[-1])  # (empty rows, Dv)
        if (rows != 0).any():
            uniform = v32.mean(-2, keepdim=True).expand(got32.shape).masked_select(empty).view(-1, got.shape[-1])
            if torch.allclose(rows, uniform, atol=3e-2 if q.dtype != torch.float32 else 1e-4, rtol=1e-3):
                return (f"the query rows with no allowed key got uniform weights, so their output is the mean of v "
                        f"(for {setting}): a finite mask value such as -1e9 leaves an all-masked row uniform after "
                        "the softmax. Such a row must give zero weights and a zero output (no NaN either)")
            return (f"the query rows with no allowed key (pad queries) must give a zero output, got values up to "
                    f"{rows.abs().max().item():.3g} (for {setting})")
    return f"{problem or 'the output differs from attention under the offset-aware causal mask'} (for {setting})"


def explain_causal_weights_mismatch(weights: object, out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                    attn_mask: Tensor | None = None, exact_dtype: bool = True) -> str | None:
    """None if the returned ``weights`` are right (and are the ones ``out`` uses), else what is wrong.

    ``exact_dtype=False``: a dtype other than the inputs' is not a mistake here (values only).

    Shapes:
        weights: (*, T, S); out: (*, T, Dv); q: (*, T, D); k: (*, S, D); v: (*, S, Dv)
    """
    setting = f"q {tuple(q.shape)}, k {tuple(k.shape)}" + (
        "" if attn_mask is None else f", attn_mask {tuple(attn_mask.shape)}")
    allowed = _allowed(q, k, attn_mask).expand(*q.shape[:-1], k.shape[-2])  # (*, T, S)
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])  # (*, T, S)
    want = stable_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).to(q.dtype)
    problem = tensor_problem(weights, want, "the tensor of weights", exact_dtype=exact_dtype,
                             atol=1e-5 if q.dtype == torch.float32 else 1e-2)
    if problem is None:
        return None
    if problem and (not isinstance(weights, Tensor) or tuple(weights.shape) != tuple(want.shape)
                    or (exact_dtype and weights.dtype != want.dtype)):
        return f"{problem} (for {setting})"
    w = weights.detach().float()
    if torch.isnan(w).any():
        return f"the weights contain NaN (for {setting}): a row with no allowed key must get zero weights"
    leaked = (w.abs() > 1e-5) & ~allowed
    if leaked.any():
        first = leaked.nonzero()[0].tolist()
        return (f"the weights of forbidden keys must be 0, but {int(leaked.sum())} are not, first at "
                f"{first} (for {setting}): return the weights of the masked softmax")
    sums = w.sum(-1)
    has_keys = allowed.any(-1)
    if not torch.allclose(sums[has_keys], torch.ones_like(sums[has_keys]), atol=1e-2):
        return (f"each row's allowed weights must sum to 1, got sums such as {sums[has_keys][:3].tolist()} "
                f"(for {setting}): mask the logits before the softmax, not the weights after it")
    if isinstance(out, Tensor) and out.shape[:-1] == w.shape[:-1] and not torch.allclose(
            w @ v.float(), out.detach().float(), atol=1e-4 if q.dtype == torch.float32 else 3e-2, rtol=1e-3):
        return (f"the returned weights are not the ones your output uses: weights @ v differs from the output "
                f"(for {setting})")
    return f"{problem} (for {setting})"
