"""Name the mistake behind a wrong answer, for the graders' feedback.

A hidden test knows the right answer; when a learner's output differs, these
functions recompute the output under each classic mistake of the chapter (see
the brief's bug catalogue) and say which one reproduces it. The candidate
mistakes are written here once, so every notebook gives the same advice.
"""

import math

import torch
from torch import Tensor

from attnlab.attention import stable_softmax
from attnlab.generation import extend_attention_mask
from attnlab.diagnose_causal import (  # noqa: F401  (chapter 2, re-exported)
    causal_attention_mistakes,
    causal_mask_mistakes,
    explain_causal_attention_mismatch,
    explain_causal_mask_mismatch,
)
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


def explain_repeat_kv_mismatch(got: Tensor, x: Tensor, n_rep: int) -> str:
    """Name the mistake behind a wrong ``repeat_kv(x, n_rep)``.

    Shapes:
        x: (B, Hkv, S, D); expected (B, Hkv * n_rep, S, D)
    """
    want = (x.shape[0], x.shape[1] * n_rep, *x.shape[2:])
    if not isinstance(got, Tensor):
        return f"repeat_kv must return a tensor, got {type(got).__name__}"
    if tuple(got.shape) != want:
        return f"repeat_kv(x of shape {tuple(x.shape)}, n_rep={n_rep}) must have shape {want}, got {tuple(got.shape)}"
    if torch.equal(got, x.repeat(1, n_rep, 1, 1)):
        return (f"Looks like you used repeat (tiling: output head h = K/V head h % Hkv) instead of "
                f"repeat_interleave (output head h = K/V head h // n_rep) (x {tuple(x.shape)}, n_rep={n_rep}).")
    return f"repeat_kv is wrong for x {tuple(x.shape)}, n_rep={n_rep}: output head h must be input head h // n_rep"


def explain_gqa_mismatch(got: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> str:
    """Name the mistake behind a wrong grouped-query attention output.

    Shapes:
        q: (B, H, T, D); k, v: (B, Hkv, S, D); attn_mask broadcastable to (B, H, T, S); got (B, H, T, D)
    """
    group = q.shape[1] // k.shape[1]
    where = f"q {tuple(q.shape)}, k {tuple(k.shape)}" + ("" if attn_mask is None else f", mask {tuple(attn_mask.shape)}")
    if not isinstance(got, Tensor) or tuple(got.shape) != tuple(q.shape):
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        return f"output must have the shape of q, (B, H, T, D) = {tuple(q.shape)}, got {shape} ({where})"
    if k.shape[1] > 1 and group > 1:
        tiled = _attention_with(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), attn_mask)
        if torch.allclose(got, tiled, atol=1e-4, rtol=1e-3):
            return (f"Looks like query head h is paired with K/V head h % Hkv (tiling with repeat, or grouping "
                    f"the query heads in the wrong order) instead of K/V head h // G (repeat_interleave) ({where}).")
    return explain_attention_mismatch(got, q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask)


def explain_pooling_mismatch(got: Tensor, weight: Tensor, n_kv_heads: int, head_dim: int) -> str:
    """Name the mistake behind a wrong mean-pooled K or V projection weight (MHA -> GQA).

    Shapes:
        weight: (H * D, C) of the original; got: (Hkv * D, C) expected
    """
    rows, width = weight.shape
    n_heads = rows // head_dim
    group = n_heads // n_kv_heads
    want = (n_kv_heads * head_dim, width)
    if not isinstance(got, Tensor) or tuple(got.shape) != want:
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        return (f"the pooled k_proj/v_proj weight must have shape (Hkv * D, C) = {want}, got {shape}: "
                "keep only Hkv key/value heads, or no memory is saved")
    heads = weight.reshape(n_heads, head_dim, width)
    candidates = {
        "you pooled interleaved heads h, h+Hkv, h+2*Hkv, ... instead of the consecutive heads "
        "g*G ... g*G+G-1 of each group": heads.reshape(group, n_kv_heads, head_dim, width).mean(0),
        "you kept the first head of each group instead of the mean": heads.reshape(n_kv_heads, group, head_dim, width)[:, 0],
        "you summed the heads of each group instead of averaging them": heads.reshape(n_kv_heads, group, head_dim, width).sum(1),
    }
    for description, wrong in candidates.items():
        if torch.allclose(got, wrong.reshape(want), atol=1e-6):
            return f"Looks like {description} (H={n_heads}, Hkv={n_kv_heads}, D={head_dim})."
    return (f"pooled weight is wrong (H={n_heads}, Hkv={n_kv_heads}, D={head_dim}): K/V head g must be the mean "
            f"of the original heads g*G ... g*G+G-1")


# ----------------------------------------------------------------------------
# Chapter 7: cached greedy decoding.

GENERATION_MISTAKES = {
    "top_left_mask": (
        "you used a top-left causal mask (tril of a (T, S) block, or is_causal=True) with a cache: "
        "with T != S the T queries are the LAST T positions, query i sits at S - T + i"
    ),
    "pad_mask_dropped": (
        "the pad mask was dropped after the first decode step: carry the prompt's attention_mask "
        "(its 0s) and append a 1 column per generated token"
    ),
    "positions_restart": (
        "your position ids restart instead of continuing: a new token's position counts every real "
        "token before it, the cached ones included (position_ids of the whole mask, last T columns)"
    ),
}
# (Positions not shifted for left padding are no mistake to diagnose here: rotary scores depend on
# m - n only, so shifting every position of a sequence by its pad count changes nothing.)


def _variant_inputs(mistake: str | None, mask: Tensor, T: int, decoding: bool) -> tuple[Tensor, Tensor]:
    """attn_mask (B, 1, T, S) and position_ids (B, T) for one call, with ``mistake`` applied.

    Shapes:
        mask: (B, S) 1 = real token; returns (B, 1, T, S) bool, (B, T) long
    """
    B, S = mask.shape
    if mistake == "pad_mask_dropped" and decoding:
        mask = torch.ones_like(mask)  # the pads are forgotten from here on
    keys = padding_mask(mask)  # (B, 1, 1, S)
    if mistake == "top_left_mask":
        causal = torch.ones(T, S, dtype=torch.bool, device=mask.device).tril()  # top-left: wrong if T != S
    else:
        causal = causal_mask(T, S, device=mask.device)  # (T, S)
    if mistake == "positions_restart":
        positions = position_ids(mask[:, -T:])  # counts the new columns only: restarts at 0
    else:
        positions = position_ids(mask)[:, -T:]  # (B, S) -> (B, T)
    return keys & causal, positions


@torch.no_grad()
def greedy_with_mistake(model, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int,
                        prefill_chunk: int | None = None, mistake: str | None = None) -> tuple[Tensor, Tensor]:
    """Cached greedy decoding with one classic mistake of ``GENERATION_MISTAKES`` (or none).

    Uses the package's ``KVCache`` and ``LlamaLM.forward_with_mask``; with
    ``mistake=None`` it agrees with :func:`attnlab.generation.generate_with_logits`.

    Shapes:
        input_ids, attention_mask: (B, P), left-padded
        returns: tokens (B, N), logits (B, N, V)
    """
    if mistake is not None and mistake not in GENERATION_MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}; known: {sorted(GENERATION_MISTAKES)}")
    B, P = input_ids.shape
    caches = model.new_caches(B, capacity=P + max_new_tokens)
    chunk = P if prefill_chunk is None else prefill_chunk
    for start in range(0, P, chunk):
        end = min(start + chunk, P)
        attn_mask, positions = _variant_inputs(mistake, attention_mask[:, :end], end - start, decoding=False)
        logits = model.forward_with_mask(input_ids[:, start:end], attn_mask, positions, caches)
    next_logits, mask = logits[:, -1], attention_mask
    tokens, all_logits = [], []
    for step in range(max_new_tokens):
        token = next_logits.argmax(-1)  # (B,)
        tokens.append(token)
        all_logits.append(next_logits)
        if step == max_new_tokens - 1:
            break
        mask = extend_attention_mask(mask, 1)  # (B, S) -> (B, S + 1)
        attn_mask, positions = _variant_inputs(mistake, mask, 1, decoding=True)
        next_logits = model.forward_with_mask(token[:, None], attn_mask, positions, caches)[:, -1]
    return torch.stack(tokens, 1), torch.stack(all_logits, 1)  # (B, N), (B, N, V)


def explain_generation_mismatch(model, input_ids: Tensor, attention_mask: Tensor, got_logits: object,
                                prefill_chunk: int | None = None, atol: float = 1e-4) -> str:
    """Name the decoding mistake that reproduces ``got_logits``, or say where they first differ.

    Shapes:
        input_ids, attention_mask: (B, P); got_logits: (B, N, V), the learner's
    """
    B, P = input_ids.shape
    where = f"(B={B}, P={P} prompt columns, {int((attention_mask == 0).sum())} pads, prefill_chunk={prefill_chunk})"
    if not isinstance(got_logits, Tensor) or got_logits.dim() != 3 or got_logits.shape[0] != B:
        shape = tuple(got_logits.shape) if isinstance(got_logits, Tensor) else type(got_logits).__name__
        return f"logits must be a (B, N, V) tensor, got {shape} {where}"
    N = got_logits.shape[1]
    _, truth = greedy_with_mistake(model, input_ids, attention_mask, N, prefill_chunk)
    if got_logits.shape != truth.shape:
        return f"logits have shape {tuple(got_logits.shape)}, expected {tuple(truth.shape)} {where}"
    if not torch.isfinite(got_logits).all():
        return f"your logits contain NaN or inf {where}"
    for mistake, description in GENERATION_MISTAKES.items():
        _, wrong = greedy_with_mistake(model, input_ids, attention_mask, N, prefill_chunk, mistake)
        if not torch.allclose(wrong, truth, atol=atol, rtol=0) and torch.allclose(got_logits, wrong, atol=atol, rtol=0):
            return f"Looks like {description} {where}."
    bad_steps = [n for n in range(N) if not torch.allclose(got_logits[:, n], truth[:, n], atol=atol, rtol=0)]
    first = bad_steps[0] if bad_steps else None
    stage = "the prefill (step 0)" if first == 0 else f"decode step {first}"
    return (f"cached logits differ from the uncached model's from {stage} on {where}; "
            "check the cache update, the mask for T queries after a cache and the position ids")


def explain_cache_update(length_before: int, length_after: object, T: int, k_all: object, want_k: Tensor) -> str | None:
    """Name what a learner's ``KVCache.update`` did wrong, or ``None`` if it did it right.

    ``want_k`` is every key written so far, in order (oldest first).

    Shapes:
        k_all: (B, Hkv, S', D), what update returned; want_k: (B, Hkv, S, D), S = length_before + T
    """
    S = want_k.shape[2]
    if length_after == length_before:
        return ("length did not change after an update: your cache never appends "
                "(write k, v into slots [length, length + T) and advance length by T)")
    if length_after == length_before + 2 * T:
        return f"length grew by 2T = {2 * T} for T={T} new positions: your cache appends twice"
    if length_after != S:
        return f"after writing {S} positions length is {length_after}, expected {S}"
    if not isinstance(k_all, Tensor) or tuple(k_all.shape) != tuple(want_k.shape):
        shape = tuple(k_all.shape) if isinstance(k_all, Tensor) else type(k_all).__name__
        if isinstance(k_all, Tensor) and k_all.dim() == 4 and k_all.shape[2] == T != S:
            return (f"after {S} positions update returned only the {T} new ones: your cache never appends "
                    "(return all cached positions, oldest first)")
        return f"after {S} positions update returned keys of shape {shape}, expected {tuple(want_k.shape)}"
    if not torch.equal(k_all, want_k):
        bad = [s for s in range(S) if not torch.equal(k_all[:, :, s], want_k[:, :, s])]
        return (f"slots {bad} of {S} hold the wrong keys: your cache overwrites the wrong slot; "
                "the new positions go to slots [length, length + T), the old ones stay")
    return None
