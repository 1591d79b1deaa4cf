"""Name the mistake behind a wrong KV cache or cached decoder, for the graders' feedback (chapter 7).

``greedy_with_mistake`` replays cached greedy decoding with one classic mistake of
``GENERATION_MISTAKES`` (or none); ``explain_generation_mismatch`` names the mistake that
reproduces a learner's logits, ``explain_cache_update`` what a learner's ``KVCache.update`` did.
A mistake is named only when it changes the answer for these inputs and reproduces the learner's.

Shape legend: ``B`` batch, ``P`` prompt columns, ``N`` new tokens, ``T`` positions of one call,
``S`` positions so far (cached + new), ``Hkv`` key/value heads, ``D`` head dimension, ``V`` vocabulary.
"""

import torch
from torch import Tensor

from attnlab.generation import extend_attention_mask
from attnlab.masks import causal_mask, padding_mask, position_ids

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
    "chunk_positions_restart": (
        "your position ids restart at every prefill chunk: a chunk's positions count the real tokens of "
        "the earlier chunks too (position_ids of the mask so far, last T columns)"
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
    if mistake == "positions_restart" or (mistake == "chunk_positions_restart" and not decoding):
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
    got = got_logits.to(truth.dtype)
    for mistake, description in GENERATION_MISTAKES.items():
        _, wrong = greedy_with_mistake(model, input_ids, attention_mask, N, prefill_chunk, mistake)
        if not torch.allclose(wrong, truth, atol=atol, rtol=0) and torch.allclose(got, wrong, atol=atol, rtol=0):
            return f"Looks like {description} {where}."
    bad_steps = [n for n in range(N) if not torch.allclose(got[:, n], truth[:, n], atol=atol, rtol=0)]
    if not bad_steps:
        return f"your logits match the uncached model's {where}"
    bad_rows = [b for b in range(B) if not torch.allclose(got[b], truth[b], atol=atol, rtol=0)]
    stage = "the prefill (step 0)" if bad_steps[0] == 0 else f"decode step {bad_steps[0]}"
    return (f"cached logits differ from the uncached model's from {stage} on, in batch rows {bad_rows} {where}; "
            "check the cache update, the mask for T queries after a cache and the position ids")


def explain_cache_update(length_before: int, length_after: object, T: int, k_all: object, want_k: Tensor) -> str | None:
    """Name what a learner's ``KVCache.update`` did wrong, or ``None`` if it did it right.

    ``want_k`` is every key written so far, in order (oldest first), as the caller had them
    before the update.

    Shapes:
        k_all: (B, Hkv, S', D), what update returned; want_k: (B, Hkv, S, D), S = length_before + T
    """
    S = want_k.shape[2]
    if not isinstance(length_after, int) or isinstance(length_after, bool):
        return f"length must be an int (a property or attribute), got {type(length_after).__name__}"
    if length_after == length_before:
        return ("length did not change after an update: your cache never appends "
                "(write k, v into slots [length, length + T) and advance length by T)")
    if length_after == length_before + 2 * T:
        return f"length grew by 2T = {2 * T} for T={T} new positions: your cache appends twice"
    if length_after != S:
        return f"after writing {S} positions length is {length_after}, expected {S}"
    if not isinstance(k_all, Tensor):
        return f"update must return (k_all, v_all) tensors, got {type(k_all).__name__} for the keys"
    if tuple(k_all.shape) != tuple(want_k.shape):
        if k_all.dim() == 4 and k_all.shape[2] == T != S:
            return (f"after {S} positions update returned only the {T} new ones: your cache never appends "
                    "(return all cached positions, oldest first)")
        return f"after {S} positions update returned keys of shape {tuple(k_all.shape)}, expected {tuple(want_k.shape)}"
    if k_all.dtype != want_k.dtype:
        return f"update returned keys of dtype {k_all.dtype}, expected {want_k.dtype} (the cache's dtype)"
    if not torch.equal(k_all, want_k):
        bad = [s for s in range(S) if not torch.equal(k_all[:, :, s], want_k[:, :, s])]
        old = [s for s in bad if s < length_before]
        if old:
            return (f"slots {old} of the {length_before} cached before this update changed: your cache overwrites "
                    "the wrong slot; the new positions go to slots [length, length + T), the old ones stay")
        return (f"slots {bad} (this update's, [{length_before}, {S})) hold the wrong keys: copy this call's k "
                "into them unchanged")
    return None
