"""Generation with and without a KV cache: greedy or sampled, stopping at EOS, streamed (chapter 7).

Shape legend: ``B`` batch, ``P`` prompt positions (padded), ``N`` new tokens,
``S`` positions so far (prompt + generated), ``V`` vocabulary size, ``D``
head dimension.

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

How the loop runs depends on ``model.config.attention_impl``:

* ``"teaching"``: each step calls ``model(...)`` with the whole
  ``attention_mask``, which rebuilds the mask and the position ids from it,
  as chapter 7 derives them.
* ``"fast"`` (the default): everything is checked once, before the loop, and
  the loop keeps its state instead of rebuilding it: a ``(B, P + N)`` key mask
  written once (the decode step's mask is a view of its first ``S`` columns;
  without padding there is no mask at all), each row's next position (one
  in-place ``+= 1`` per step), the rotary tables' rows. The prefill computes
  the LM head for the last position only. No step reads a value back to the
  host (no ``.item()``, ``.any()``): on a GPU the Python loop runs ahead of
  the kernels. The one exception is stopping at EOS, which must know when
  every row has finished; on a GPU that flag is copied back asynchronously and
  read one step late.

Greedy decoding picks the argmax; ``do_sample=True`` samples from the softmax
of the logits after ``temperature``, ``top_k`` and ``top_p`` (in Hugging
Face's order), from a ``torch.Generator`` you can seed. With ``eos_token_id``
a row that produced EOS is finished: its later tokens are ``pad_token_id``,
and generation stops once every row has finished (so fewer than
``max_new_tokens`` columns may come back).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.cache import ConcatKVCache, KVCache, StaticKVCache
from attnlab.llama import LlamaLM
from attnlab.sampling import Sampling, choose_next


def extend_attention_mask(attention_mask: Tensor, n_new: int = 1) -> Tensor:
    """Append ``n_new`` real-token columns to ``attention_mask`` (a new tensor).

    Shapes:
        attention_mask: (B, S)
        returns: (B, S + n_new), same dtype and device
    """
    ones = attention_mask.new_ones(attention_mask.shape[0], n_new)  # (B, n_new)
    return torch.cat([attention_mask, ones], dim=1)  # (B, S) + (B, n_new) -> (B, S + n_new)


class _StopAtEos:
    """Marks rows finished once they produce EOS, pads them after, says when all are done.

    On the CPU ``all_done`` reads the flag directly. On an accelerator it
    copies the flag to pinned host memory without waiting and reads it once the
    copy's event has completed, so the host never waits for the step it just
    launched; the loop may then run a step or two more, whose columns hold only
    padding (``generate`` drops them after the loop; ``stream_generate`` has
    already handed them over).

    Shapes:
        finished: (B,) bool
    """

    def __init__(self, eos: Tensor, pad: int, batch: int, device: torch.device) -> None:
        self.eos, self.pad = eos, pad  # (E,) long
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)  # (B,)
        self.lazy = device.type != "cpu"
        if self.lazy:
            self.host = torch.zeros((), dtype=torch.bool, pin_memory=True)
            self.event = None

    def apply(self, token: Tensor) -> Tensor:
        """Padding for rows already finished; mark rows that produced EOS now.

        Shapes:
            token: (B,) -> returns (B,)
        """
        token = token.masked_fill(self.finished, self.pad)  # (B,)
        self.finished |= torch.isin(token, self.eos)
        if self.lazy:
            self.host.copy_(self.finished.all(), non_blocking=True)
            self.event = torch.Event(device=self.finished.device)
            self.event.record()
        return token

    def all_done(self) -> bool:
        """Every row finished? (on an accelerator: as of the previous step)"""
        if not self.lazy:
            return bool(self.finished.all())
        return bool(self.event is not None and self.event.query() and self.host)


# ------------------------------------------------------------------ checks, once
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
    low, high = (int(x) for x in input_ids.aminmax())
    if low < 0 or high >= model.config.vocab_size:
        raise ValueError(f"input_ids must lie in [0, vocab_size={model.config.vocab_size}), got {low} to {high}")
    empty = (attention_mask == 0).all(dim=1)  # (B,)
    if bool(empty.any()):
        raise ValueError(f"prompts {empty.nonzero().flatten().tolist()} are all padding: nothing to continue")
    return attention_mask


def _check_eos(model, eos_token_id, pad_token_id, device) -> tuple[list[int], int] | None:
    if eos_token_id is None:
        if pad_token_id is not None:
            raise ValueError(f"pad_token_id={pad_token_id!r} pads finished rows: it needs an eos_token_id")
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool) else eos_token_id
    vocab = model.config.vocab_size
    if not isinstance(ids, (list, tuple)) or not ids or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids
    ):
        raise ValueError(f"eos_token_id must be a token id or a list of them in [0, {vocab}), got {eos_token_id!r}")
    pad = ids[0] if pad_token_id is None else pad_token_id
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < vocab:
        raise ValueError(f"pad_token_id must be a token id in [0, {vocab}), got pad_token_id={pad_token_id!r}")
    return ids, pad


# ------------------------------------------------------------------ the loops
def _teaching_steps(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls):
    """Logits of every step, the chapter's way: ``model(...)`` rebuilds mask and positions each call.

    A generator: receives each chosen token (B,) by ``send`` and yields the next logits (B, V).
    """
    batch, prompt = input_ids.shape
    if use_cache:
        caches = model.new_caches(batch, capacity=prompt + max_new_tokens, cache_cls=cache_cls)
        chunk = prompt if prefill_chunk is None else prefill_chunk
        for start in range(0, prompt, chunk):
            end = min(start + chunk, prompt)
            # T = end - start queries after `start` cached positions; the mask covers all `end`.
            logits = model(input_ids[:, start:end], attention_mask=attention_mask[:, :end], caches=caches)
        mask = attention_mask
        token = yield logits[:, -1]  # (B, T, V) -> (B, V)
        while True:
            mask = extend_attention_mask(mask, 1)  # (B, S) -> (B, S + 1): the pad columns stay 0
            token = yield model(token[:, None], attention_mask=mask, caches=caches)[:, -1]  # (B, V)
    else:
        sequence, mask = input_ids, attention_mask
        while True:
            token = yield model(sequence, attention_mask=mask)[:, -1]  # (B, S, V) -> (B, V)
            sequence = torch.cat([sequence, token[:, None]], dim=1)  # (B, S) -> (B, S + 1)
            mask = extend_attention_mask(mask, 1)  # (B, S) -> (B, S + 1)


@dataclass
class DecodeState:
    """What the fast loop keeps between steps instead of rebuilding it.

    ``keep`` is ``None`` without padding (then no step needs a mask: the fused
    kernel's causal mask does for the prompt, and one new token sees every
    key); with padding it is the key mask of every position the generation
    will ever have, written once: the prompt's ``attention_mask``, then ones.
    ``positions`` is each column's position id: the real tokens before it
    (as :func:`attnlab.masks.position_ids` counts them) with padding, the
    column index without. Every step's mask and positions are views of these.

    Shapes:
        keep: (B, P + N) bool or None; positions: (B, P + N) long, or (P + N,) without padding
    """

    keep: Tensor | None
    positions: Tensor

    @classmethod
    def start(cls, attention_mask: Tensor, capacity: int) -> "DecodeState":
        """The state for a prompt; reads ``attention_mask`` once (is there any padding?).

        Shapes:
            attention_mask: (B, P), 1 = real; capacity: P + N
        """
        device = attention_mask.device
        if bool(attention_mask.all()):
            return cls(keep=None, positions=torch.arange(capacity, device=device))  # (P + N,)
        batch, prompt = attention_mask.shape
        keep = torch.ones(batch, capacity, dtype=torch.bool, device=device)  # (B, P + N)
        keep[:, :prompt] = attention_mask != 0
        positions = (keep.long().cumsum(dim=1) - 1).clamp_min(0)  # (B, P + N): index among the real tokens
        return cls(keep=keep, positions=positions)

    def key_mask(self, end: int, new: int) -> Tensor | None:
        """Which keys the ``new`` queries ending at column ``end`` may see (``None``: all, causally).

        Shapes:
            returns: (B, 1, 1, S) for one query, (B, 1, T, S) for a prompt chunk, or None
        """
        if self.keep is None:
            return None
        keys = self.keep[:, None, None, :end]  # (B, 1, 1, S), a view
        if new > 1:  # a prompt chunk: the offset-aware causal mask as well
            keys = keys & torch.ones(new, end, dtype=torch.bool, device=keys.device).tril(end - new)
        return keys

    def position_ids(self, end: int, new: int) -> Tensor:
        """Position ids of the columns ``[end - new, end)``, a view.

        Shapes:
            returns: (B, T), or (T,) without padding
        """
        return self.positions[..., end - new:end]

    def inputs(self, model: LlamaLM, end: int, new: int):
        """Everything ``model.forward_unchecked`` needs for the columns ``[end - new, end)``.

        Shapes:
            returns: attn_mask (B, 1, T, S) bool or None, is_causal, rotary (cos, signed sin)
            each (B, T, D) or (T, D), position_ids (B, T) or (T,)
        """
        positions = self.position_ids(end, new)
        rotary = model.rotary(positions, model.embed_tokens.weight.dtype)
        return self.key_mask(end, new), self.keep is None, rotary, positions


def _prefill(model, input_ids, state: "DecodeState", prefill_chunk: int | None):
    """Run the prompt (in chunks if asked) into small caches that hold the prompt only.

    The caches of the whole generation (``P + N`` positions) are allocated
    *after* the prefill, once its temporaries are freed, and the prompt's keys
    and values copied in: the peak memory is then the larger of the two phases,
    not their sum (a preallocated cache would otherwise sit idle under the
    prefill's activations).

    Shapes:
        input_ids: (B, P); returns logits (B, 1, V) of the last position, and one
        ConcatKVCache per layer holding (B, Hkv, P, D)
    """
    batch, prompt = input_ids.shape
    staged = model.new_caches(batch, capacity=prompt, cache_cls=ConcatKVCache)
    chunk = prompt if prefill_chunk is None else prefill_chunk
    for start in range(0, prompt, chunk):
        end = min(start + chunk, prompt)
        attn_mask, causal, rotary, positions = state.inputs(model, end, end - start)
        logits = model.forward_unchecked(
            input_ids[:, start:end], attn_mask, causal, rotary, positions, staged, logits_to_keep=1
        )  # (B, 1, V)
    return logits, staged


def _fast_steps(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls):
    """Logits of every step, from the kept state; the same protocol as :func:`_teaching_steps`."""
    batch, prompt = input_ids.shape
    capacity = prompt + max_new_tokens
    state = DecodeState.start(attention_mask, capacity)
    if use_cache:
        logits, staged = _prefill(model, input_ids, state, prefill_chunk)
        caches = model.new_caches(batch, capacity=capacity, cache_cls=cache_cls)
        for cache, stage in zip(caches, staged):
            cache.update(stage.k, stage.v)  # (B, Hkv, P, D) into the first P slots
        del staged
        end = prompt
        token = yield logits[:, -1]  # (B, V)
        while True:
            end += 1
            attn_mask, _, rotary, positions = state.inputs(model, end, 1)
            logits = model.forward_unchecked(token[:, None], attn_mask, False, rotary, positions, caches)
            token = yield logits[:, -1]  # (B, 1, V) -> (B, V)
    else:
        sequence = torch.empty(batch, capacity, dtype=input_ids.dtype, device=input_ids.device)  # (B, P + N)
        sequence[:, :prompt] = input_ids
        end = prompt
        while True:
            attn_mask, causal, rotary, positions = state.inputs(model, end, end)
            logits = model.forward_unchecked(
                sequence[:, :end], attn_mask, causal, rotary, positions, logits_to_keep=1
            )
            token = yield logits[:, -1]  # (B, V)
            sequence[:, end] = token
            end += 1


def _static_decode_step(model: LlamaLM, token: Tensor, position: Tensor, keep: Tensor | None,
                        positions: Tensor, caches: list[StaticKVCache]) -> Tensor:
    """One decode step with static shapes: the function ``torch.compile`` compiles once.

    Every input keeps its shape and (for the caches) its address from step to
    step; the step number lives in the tensor ``position``, not in Python.

    Shapes:
        token: (B, 1); position: (1,) long, the slot this token is written to
        keep: (B, capacity) bool or None; positions: (B, capacity) or (capacity,) position ids
        returns: logits (B, V)
    """
    visible = caches[0]._offsets <= position  # (capacity,): slots written so far, this one included
    mask = visible[None, None, None, :]  # (1, 1, 1, capacity)
    if keep is not None:
        mask = mask & keep[:, None, None, :]  # (B, 1, 1, capacity)
    ids = positions.index_select(-1, position)  # (B, 1) or (1,)
    rotary = model.rotary(ids, model.embed_tokens.weight.dtype)
    return model.forward_unchecked(token, mask, False, rotary, ids, caches)[:, -1]  # (B, V)


_COMPILED_STEPS: dict[str, object] = {}


def compiled_decode_step(device: torch.device):
    """``torch.compile`` of :func:`_static_decode_step` (CUDA: ``mode="reduce-overhead"``, CUDA graphs).

    Compiled lazily, once per device type; ``torch.compile`` recompiles by
    itself for another batch size, capacity or model.
    """
    if device.type not in _COMPILED_STEPS:
        mode = "reduce-overhead" if device.type == "cuda" else None
        _COMPILED_STEPS[device.type] = torch.compile(_static_decode_step, fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED_STEPS[device.type]


def _compiled_steps(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls):
    """The fast loop with :class:`StaticKVCache` and a compiled decode step; same protocol as the others."""
    batch, prompt = input_ids.shape
    capacity = prompt + max_new_tokens
    device = input_ids.device
    state = DecodeState.start(attention_mask, capacity)
    logits, staged = _prefill(model, input_ids, state, prefill_chunk)  # eagerly: its shapes vary
    position = torch.zeros(1, dtype=torch.long, device=device)  # shared by every layer's cache
    ref = model.embed_tokens.weight
    caches = [StaticKVCache(batch, model.config.n_kv_heads, capacity, model.config.head_dim, ref.dtype, device,
                            position=position) for _ in model.layers]
    for cache, stage in zip(caches, staged):
        cache.update(stage.k, stage.v)  # slots [0, P)
    del staged
    position += prompt
    step = compiled_decode_step(device)
    cuda_graphs = device.type == "cuda"
    token = yield logits[:, -1]
    while True:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten now
        logits = step(model, token[:, None], position, state.keep, state.positions, caches)
        if cuda_graphs:
            logits = logits.clone()  # a CUDA graph's output lives in memory the next replay reuses
        position += 1
        token = yield logits


def _steps(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls,
           sampling: Sampling, stop: "_StopAtEos | None", compiled: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(token, logits)`` for every generated position, stopping at EOS or ``max_new_tokens``.

    Shapes:
        yields: token (B,) long, logits (B, V)
    """
    if compiled:
        make = _compiled_steps
    else:
        make = _teaching_steps if model.config.attention_impl == "teaching" else _fast_steps
    steps = make(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls)
    logits = next(steps)  # the prefill
    for step in range(max_new_tokens):
        token = choose_next(logits, sampling)  # (B,)
        if stop is not None:
            token = stop.apply(token)
        yield token, logits
        if step == max_new_tokens - 1:
            break
        logits = steps.send(token)  # feed the token, get the next logits
        if stop is not None and stop.all_done():
            break
    steps.close()


def _prepare(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls, *,
             eos_token_id, pad_token_id, do_sample, temperature, top_k, top_p, generator, compiled):
    """Check everything once; return the loop's iterator of ``(token, logits)``."""
    attention_mask = _check_generate_args(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk)
    sampling = Sampling(do_sample, temperature, top_k, top_p, generator)
    device = model.embed_tokens.weight.device
    if input_ids.device != device or attention_mask.device != device:
        raise ValueError(f"input_ids and attention_mask must be on the model's device {device}, got {input_ids.device}")
    if not isinstance(compiled, bool):
        raise ValueError(f"compiled must be a bool, got compiled={compiled!r}")
    if compiled and (not use_cache or model.config.attention_impl != "fast" or cache_cls is not KVCache):
        raise ValueError(
            f"compiled=True runs the fast path with its own static cache: it needs use_cache=True, "
            f"attention_impl='fast' and the default cache_cls, got use_cache={use_cache}, "
            f"attention_impl={model.config.attention_impl!r}, cache_cls={getattr(cache_cls, '__name__', cache_cls)}"
        )
    eos = _check_eos(model, eos_token_id, pad_token_id, device)
    stop = None if eos is None else _StopAtEos(torch.tensor(eos[0], device=device), eos[1], input_ids.shape[0], device)
    return _steps(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls,
                  sampling, stop, compiled)


@torch.no_grad()
def stream_generate(
    model: LlamaLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
    prefill_chunk: int | None = None,
    cache_cls: type = KVCache,
    *,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    compiled: bool = False,
) -> Iterator[Tensor]:
    """Yield each step's new tokens as soon as they are chosen (see :func:`generate`).

    Everything is checked on the first ``next()``. The tokens stay on the
    model's device: printing them reads them back (a host synchronisation you
    choose to pay).

    Shapes:
        yields: (B,) long, one per step, at most max_new_tokens of them
    """
    steps = _prepare(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls,
                     eos_token_id=eos_token_id, pad_token_id=pad_token_id, do_sample=do_sample,
                     temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, compiled=compiled)
    for token, _ in steps:
        yield token


@torch.no_grad()
def generate_with_logits(
    model: LlamaLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
    prefill_chunk: int | None = None,
    cache_cls: type = KVCache,
    *,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[Tensor], None] | None = None,
    compiled: bool = False,
    keep_logits: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Generate; return the new tokens and the logits each was chosen from.

    ``use_cache=False`` recomputes the whole sequence at every step (the
    reference); ``use_cache=True`` prefills caches of capacity ``P +
    max_new_tokens`` (``cache_cls``, default :class:`attnlab.cache.KVCache`)
    and then feeds one token per step. ``prefill_chunk`` splits the prefill
    into chunks of that many prompt tokens (cache only). The caller's tensors
    are not modified. Keeping every step's logits costs ``B * N * V`` numbers:
    :func:`generate` (``keep_logits=False``) keeps only the tokens.

    Decoding is greedy unless ``do_sample=True`` (then ``temperature``,
    ``top_k``, ``top_p``, ``generator``: see :class:`Sampling`). With
    ``eos_token_id`` (an id or a list) a row stops at its first EOS, later
    positions hold ``pad_token_id`` (default: the first EOS id) and the loop
    ends when every row has stopped. ``on_token`` is called with each step's
    tokens ``(B,)`` as soon as they are chosen (streaming). ``compiled=True``
    decodes with a :class:`attnlab.cache.StaticKVCache` and a
    ``torch.compile``-d step (CUDA graphs on a GPU): the first call compiles
    (tens of seconds), later calls with the same shapes reuse it.

    Shapes:
        input_ids: (B, P), left-padded; attention_mask: (B, P), 1 = real token
        returns: tokens (B, N) long, logits (B, N, V) or None, N <= max_new_tokens
    """
    steps = _prepare(model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls,
                     eos_token_id=eos_token_id, pad_token_id=pad_token_id, do_sample=do_sample,
                     temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, compiled=compiled)
    if on_token is not None and not callable(on_token):
        raise ValueError(f"on_token must be callable (it receives each step's (B,) tokens), got {on_token!r}")
    tokens, step_logits = [], []
    for token, logits in steps:
        tokens.append(token)
        if keep_logits:
            step_logits.append(logits)
        if on_token is not None:
            on_token(token)
    tokens = torch.stack(tokens, dim=1)  # (B, N)
    logits = torch.stack(step_logits, dim=1) if keep_logits else None  # (B, N, V)
    if eos_token_id is not None:
        # On an accelerator the loop learns late that every row has finished: drop the extra
        # columns (all padding), so that every device returns the same (a no-op on the CPU).
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id, device=tokens.device)
        ended = torch.isin(tokens, eos).cumsum(dim=1).bool().all(dim=0)  # (N,): every row has ended
        if bool(ended.any()):  # one read back, after the loop
            keep = int(ended.long().argmax()) + 1
            tokens = tokens[:, :keep]
            logits = logits[:, :keep] if logits is not None else None
    return tokens, logits


@torch.no_grad()
def generate(
    model: LlamaLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
    prefill_chunk: int | None = None,
    cache_cls: type = KVCache,
    *,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[Tensor], None] | None = None,
    compiled: bool = False,
) -> Tensor:
    """Generate; return only the new tokens (see :func:`generate_with_logits` for the options).

    Shapes:
        input_ids: (B, P), left-padded; attention_mask: (B, P), 1 = real token
        returns: tokens (B, N) long, N <= max_new_tokens
    """
    tokens, _ = generate_with_logits(
        model, input_ids, attention_mask, max_new_tokens, use_cache, prefill_chunk, cache_cls,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, generator=generator, on_token=on_token, compiled=compiled, keep_logits=False,
    )
    return tokens
