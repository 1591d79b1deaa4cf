"""Key/value caches for incremental decoding (chapter 7).

Shape legend: ``B`` batch, ``T`` positions written by this call, ``S`` cached +
new positions, ``Hkv`` key/value heads, ``D`` head dimension.

A decoder that generates one token at a time would otherwise recompute the keys
and values of the whole prefix at every step. A cache keeps each layer's keys
and values (after the rotary step, so each key carries its own position) and
hands all of them back on every call. Both caches here satisfy
:class:`attnlab.multihead.KVCacheProtocol`:

* :class:`KVCache` preallocates ``(B, Hkv, capacity, D)`` buffers once and writes
  each call's keys into the next free slots: ``O(T)`` work per call.
* :class:`ConcatKVCache` grows by ``torch.cat``: every call copies everything
  cached so far, ``O(S)`` work per call. It is the naive baseline of the
  benchmark (``benchmarks/kv_cache.py``).
* :class:`StaticKVCache` is preallocated too, but returns the whole buffers
  and writes at a position held in a tensor: every step has the same shapes,
  which is what ``torch.compile`` and CUDA graphs need.

Both store ``Hkv`` heads, the heads *before* grouped-query attention expands
them, so a grouped cache is ``H / Hkv`` times smaller than a multi-head one.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    return value


@dataclass(eq=False)
class _CacheSpec:
    """Sizes, dtype and device shared by both caches, and the checks on ``update``.

    Shapes:
        buffers: (batch_size, n_kv_heads, capacity, head_dim)
    """

    batch_size: int
    n_kv_heads: int
    capacity: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_kv_heads", "capacity", "head_dim"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got dtype={self.dtype!r}")
        # torch.device("cuda") becomes "cuda:0" once a tensor lives there: compare real devices.
        self.device = torch.empty(0, device=self.device).device

    def check_update(self, k: Tensor, v: Tensor, length: int) -> int:
        """Raise ``ValueError`` naming the values unless ``k`` and ``v`` fit; return ``T``.

        Shapes:
            k, v: (B, Hkv, T, D) with B, Hkv, D, dtype and device those of the cache
        """
        for name, x in (("k", k), ("v", v)):
            if not isinstance(x, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 4:
                raise ValueError(f"{name} must have shape (B, Hkv, T, D), got shape {tuple(x.shape)}")
        if k.shape != v.shape:
            raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)}, v {tuple(v.shape)}")
        batch, heads, new, dim = k.shape
        if batch != self.batch_size:
            raise ValueError(f"batch size mismatch: k has B={batch}, the cache holds batch_size={self.batch_size}")
        if heads != self.n_kv_heads:
            raise ValueError(
                f"head count mismatch: k has {heads} heads, the cache holds n_kv_heads Hkv={self.n_kv_heads} "
                f"(cache the key/value heads before repeat_kv expands them)"
            )
        if dim != self.head_dim:
            raise ValueError(f"head_dim mismatch: k has D={dim}, the cache holds head_dim={self.head_dim}")
        if new < 1:
            raise ValueError(f"k must hold at least one new position, got T={new} (shape {tuple(k.shape)})")
        for name, x in (("k", k), ("v", v)):
            if x.dtype != self.dtype:
                raise ValueError(f"dtype mismatch: {name} has dtype {x.dtype}, the cache holds {self.dtype}")
            if x.device != self.device:
                raise ValueError(f"device mismatch: {name} is on {x.device}, the cache is on {self.device}")
        if length + new > self.capacity:
            raise ValueError(
                f"cache overflow: length {length} + T={new} new positions > capacity {self.capacity}"
            )
        return new


@dataclass(eq=False)
class KVCache(_CacheSpec):
    """Preallocated key/value cache of one attention layer.

    ``update(k, v)`` writes this call's ``T`` positions into slots
    ``[length, length + T)`` and returns views of slots ``[0, length + T)``. A
    refused update (wrong shape, dtype, device, or overflow) raises
    ``ValueError`` and leaves the cache unchanged. The caller's ``k`` and ``v``
    are copied, never modified. The returned views share the buffers: they stay
    valid until ``reset()`` (later calls only write slots after them).

    Example:
        >>> cache = KVCache(batch_size=1, n_kv_heads=2, capacity=8, head_dim=4)
        >>> k_all, v_all = cache.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> tuple(k_all.shape), cache.length
        ((1, 2, 3, 4), 3)

    Shapes:
        k, v buffers: (B, Hkv, capacity, D)
        update: k, v (B, Hkv, T, D) -> k_all, v_all (B, Hkv, S, D), S = length + T
    """

    k: Tensor = field(init=False, repr=False)
    v: Tensor = field(init=False, repr=False)
    _length: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = (self.batch_size, self.n_kv_heads, self.capacity, self.head_dim)  # (B, Hkv, capacity, D)
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._length = 0

    @property
    def length(self) -> int:
        """Number of positions cached so far (the next free slot)."""
        return self._length

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value buffers (allocated up front: the full capacity)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k`` and ``v`` at slots ``[length, length + T)``; return all cached so far.

        Shapes:
            k, v: (B, Hkv, T, D)
            returns: k_all, v_all, each (B, Hkv, S, D) with S = length + T (views)
        """
        new = self.check_update(k, v, self._length)  # raises before anything is written
        end = self._length + new
        self.k.narrow(2, self._length, new).copy_(k)  # (B, Hkv, T, D) into slots [length, end)
        self.v.narrow(2, self._length, new).copy_(v)
        self._length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)  # (B, Hkv, S, D) views

    def reset(self) -> None:
        """Forget every cached position (the buffers are kept and reused)."""
        self._length = 0


@dataclass(eq=False)
class StaticKVCache(_CacheSpec):
    """Preallocated cache with *static shapes*: what ``torch.compile`` and CUDA graphs need.

    :class:`KVCache` returns views of the first ``S`` slots, so every decode
    step has new shapes; a compiled step would be recompiled (or run with
    dynamic shapes) and a CUDA graph, which replays fixed shapes at fixed
    addresses, could not be captured at all. This cache writes the ``T`` new
    positions at slots ``position, ..., position + T - 1`` (``position`` is a
    one-element tensor that the caller shares between the layers and advances
    after each call, so no Python number changes from step to step) and
    returns the *whole* buffers: the caller's mask must hide the slots not yet
    written. ``update`` checks nothing (it is the inside of a compiled step);
    the generation loop that builds it checks its inputs once. The buffers are
    marked as static addresses for CUDA graphs, as ``transformers``'
    ``StaticCache`` does.

    Shapes:
        k, v buffers: (B, Hkv, capacity, D); position: (1,) long, shared
        update: k, v (B, Hkv, T, D) -> the buffers (B, Hkv, capacity, D)
    """

    position: Tensor | None = None
    k: Tensor = field(init=False, repr=False)
    v: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = (self.batch_size, self.n_kv_heads, self.capacity, self.head_dim)  # (B, Hkv, capacity, D)
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.position is None:
            self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self._offsets = torch.arange(self.capacity, device=self.device)  # (capacity,)
        torch._dynamo.mark_static_address(self.k)
        torch._dynamo.mark_static_address(self.v)

    @property
    def length(self) -> int:
        """Slots written so far, as the caller has advanced ``position`` (reads it back: not for loops)."""
        return int(self.position)

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value buffers (the full capacity)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k`` and ``v`` at slots ``position + [0, T)``; return the whole buffers.

        Shapes:
            k, v: (B, Hkv, T, D)
            returns: k_all, v_all, each (B, Hkv, capacity, D)
        """
        slots = self.position + self._offsets[: k.shape[2]]  # (T,)
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        return self.k, self.v


@dataclass(eq=False)
class ConcatKVCache(_CacheSpec):
    """Key/value cache that grows by ``torch.cat``: the naive baseline.

    Same interface and refusals as :class:`KVCache` (``capacity`` is only a
    limit here), but every ``update`` copies all ``S`` cached positions into a
    new tensor, so a step costs ``O(S)`` memory traffic instead of ``O(T)``.

    Shapes:
        k, v: (B, Hkv, length, D)
        update: k, v (B, Hkv, T, D) -> k_all, v_all (B, Hkv, S, D), S = length + T
    """

    k: Tensor = field(init=False, repr=False)
    v: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reset()

    @property
    def length(self) -> int:
        """Number of positions cached so far."""
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value tensors now (they grow with ``length``)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Concatenate ``k`` and ``v`` after the cached positions; return all of them.

        Shapes:
            k, v: (B, Hkv, T, D)
            returns: k_all, v_all, each (B, Hkv, S, D) with S = length + T
        """
        self.check_update(k, v, self.length)
        self.k = torch.cat([self.k, k], dim=2)  # (B, Hkv, length, D) + (B, Hkv, T, D) -> (B, Hkv, S, D)
        self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reset(self) -> None:
        """Forget every cached position."""
        empty = (self.batch_size, self.n_kv_heads, 0, self.head_dim)  # (B, Hkv, 0, D)
        self.k = torch.zeros(empty, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(empty, dtype=self.dtype, device=self.device)


def cache_nbytes(caches: list[KVCache] | list[ConcatKVCache]) -> int:
    """Total bytes of a model's caches (one per layer), from each cache's ``nbytes``.

    Shapes:
        caches: n_layers caches; returns a Python int.
    """
    return sum(cache.nbytes for cache in caches)


def flops_per_token(S: int, L: int, C: int, H: int, Hkv: int, F: int, V: int, cached: bool) -> int:
    """FLOPs of one generated token at context length ``S``, with or without a KV cache (chapter 7).

    ``W = 4 C^2 + 4 C Hkv D + 6 C F`` weight FLOPs per token and layer (q, o;
    k, v; the gated MLP), ``4 C S`` for one query over ``S`` keys, ``2 C V`` for
    the LM head. Without a cache the step pushes all ``S`` positions through
    every layer and attends ``S`` queries over ``S`` keys (the full score
    matrix): ``L (S W + 4 C S^2) + 2 C V``; with one, ``L (W + 4 C S) + 2 C V``.

    Shapes:
        plain ints (L layers, C width, H heads, Hkv key/value heads, F MLP width,
        V vocabulary); returns an int.
    """
    for name, value in (("S", S), ("L", L), ("C", C), ("H", H), ("Hkv", Hkv), ("F", F), ("V", V)):
        _check_positive_int(name, value)
    D = C // H
    W = 4 * C * C + 4 * C * Hkv * D + 6 * C * F
    if cached:
        return L * (W + 4 * C * S) + 2 * C * V
    return L * (S * W + 4 * C * S * S) + 2 * C * V
