"""Greedy generation with and without a KV cache (chapter 7).

Shape legend: ``B`` batch, ``P`` prompt positions (padded), ``N`` new tokens,
``S`` positions so far (prompt + generated), ``V`` vocabulary size.

Without a cache every step runs the model over the whole sequence so far and
keeps the last position's logits: step ``n`` costs ``O(P + n)`` tokens of work.
With a cache the prompt is run once (the *prefill*, optionally in chunks of
``prefill_chunk`` tokens, each chunk a ``T > 1`` query block after the cached
ones), then each step runs only the one new token: ``O(1)`` tokens of
projections and MLP, ``O(S)`` attention.

Prompts must be left-padded (``CharTokenizer(..., padding_side="left")``) so
every sequence ends at the last column, where the next token is appended. The
padding mask is carried across the decode steps: each step appends a column of
ones (the new token is real) to the prompt's ``attention_mask``.
"""

import torch
from torch import Tensor

from attnlab.cache import KVCache
from attnlab.llama import LlamaLM


def extend_attention_mask(attention_mask: Tensor, n_new: int = 1) -> Tensor:
    """Append ``n_new`` real-token columns to ``attention_mask`` (a new tensor).

    Shapes:
        attention_mask: (B, S)
        returns: (B, S + n_new), same dtype and device
    """
    ones = attention_mask.new_ones(attention_mask.shape[0], n_new)  # (B, n_new)
    return torch.cat([attention_mask, ones], dim=1)  # (B, S) + (B, n_new) -> (B, S + n_new)


def _check_generate_args(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk) -> Tensor:
    if not isinstance(model, LlamaLM):
        raise ValueError(f"model must be an attnlab.llama.LlamaLM, got {type(model).__name__}")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (B, P), got {shape}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)  # (B, P): every token real
    elif not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got max_new_tokens={max_new_tokens!r}")
    if not isinstance(use_cache, bool):
        raise ValueError(f"use_cache must be a bool, got use_cache={use_cache!r}")
    if prefill_chunk is not None and (
        not isinstance(prefill_chunk, int) or isinstance(prefill_chunk, bool) or prefill_chunk < 1
    ):
        raise ValueError(f"prefill_chunk must be a positive int or None, got prefill_chunk={prefill_chunk!r}")
    prompt = input_ids.shape[1]
    limit = model.config.max_seq_len
    if prompt + max_new_tokens > limit:
        raise ValueError(
            f"prompt of P={prompt} positions + max_new_tokens={max_new_tokens} = {prompt + max_new_tokens} "
            f"exceeds max_seq_len {limit} (the cache capacity)"
        )
    empty = (attention_mask == 0).all(dim=1)  # (B,)
    if bool(empty.any()):
        raise ValueError(f"prompts {empty.nonzero().flatten().tolist()} are all padding: nothing to continue")
    return attention_mask


@torch.no_grad()
def generate_with_logits(
    model: LlamaLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
    prefill_chunk: int | None = None,
    cache_cls: type = KVCache,
) -> tuple[Tensor, Tensor]:
    """Greedy decoding; returns the new tokens and the logits each was chosen from.

    ``use_cache=False`` recomputes the whole sequence at every step (the
    reference); ``use_cache=True`` prefills caches of capacity ``P +
    max_new_tokens`` (``cache_cls``, default :class:`attnlab.cache.KVCache`)
    and then feeds one token per step. ``prefill_chunk`` splits the prefill
    into chunks of that many prompt tokens (cache only). The caller's tensors
    are not modified.

    Shapes:
        input_ids: (B, P), left-padded; attention_mask: (B, P), 1 = real token
        returns: tokens (B, N) long, logits (B, N, V) with N = max_new_tokens
    """
    attention_mask = _check_generate_args(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk)
    batch, prompt = input_ids.shape
    tokens, step_logits = [], []
    if use_cache:
        caches = model.new_caches(batch, capacity=prompt + max_new_tokens, cache_cls=cache_cls)
        chunk = prompt if prefill_chunk is None else prefill_chunk
        for start in range(0, prompt, chunk):
            end = min(start + chunk, prompt)
            # T = end - start queries after `start` cached positions; the mask covers all `end`.
            logits = model(input_ids[:, start:end], attention_mask=attention_mask[:, :end], caches=caches)
        next_logits = logits[:, -1]  # (B, T, V) -> (B, V)
        mask = attention_mask
        for step in range(max_new_tokens):
            token = next_logits.argmax(dim=-1)  # (B,)
            tokens.append(token)
            step_logits.append(next_logits)
            if step == max_new_tokens - 1:
                break
            mask = extend_attention_mask(mask, 1)  # (B, S) -> (B, S + 1): the pad columns stay 0
            next_logits = model(token[:, None], attention_mask=mask, caches=caches)[:, -1]  # (B, 1, V) -> (B, V)
    else:
        sequence, mask = input_ids, attention_mask
        for step in range(max_new_tokens):
            next_logits = model(sequence, attention_mask=mask)[:, -1]  # (B, S, V) -> (B, V)
            token = next_logits.argmax(dim=-1)  # (B,)
            tokens.append(token)
            step_logits.append(next_logits)
            sequence = torch.cat([sequence, token[:, None]], dim=1)  # (B, S) -> (B, S + 1)
            mask = extend_attention_mask(mask, 1)  # (B, S) -> (B, S + 1)
    return torch.stack(tokens, dim=1), torch.stack(step_logits, dim=1)  # (B, N), (B, N, V)


def generate(
    model: LlamaLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
    prefill_chunk: int | None = None,
    cache_cls: type = KVCache,
) -> Tensor:
    """Greedy decoding; returns only the new tokens (see :func:`generate_with_logits`).

    Shapes:
        input_ids: (B, P), left-padded; attention_mask: (B, P), 1 = real token
        returns: tokens (B, N) long, N = max_new_tokens
    """
    tokens, _ = generate_with_logits(
        model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls
    )
    return tokens
