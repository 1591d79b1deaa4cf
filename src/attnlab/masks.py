"""Causal masks, padding masks and position ids (chapters 2 and 4).

Shape legend: ``B`` batch, ``T`` query positions in this call, ``S`` key/value
positions (cached + new).

Two kinds of mask meet here:

* a boolean ``attn_mask``, True = may attend (PyTorch's convention), broadcastable
  to the attention scores ``(B, H, T, S)``;
* a tokenizer's ``attention_mask`` of shape ``(B, S)``, 1 = real token, 0 = pad.

Every function builds its result on the device of its input (or the ``device``
it is given) and never modifies its input.
"""

import torch
from torch import Tensor


def _check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` >= 1, else raise ``ValueError`` naming it."""
    # bool is a subclass of int, but causal_mask(True) is surely a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {name}={value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {name}={value}")
    return value


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean causal mask for ``T`` queries that are the *last* ``T`` of ``S`` positions.

    Query ``i`` sits at absolute position ``S - T + i`` and may attend to every key
    ``j <= S - T + i``. With ``T == S`` (no cache) this is the usual lower
    triangle; with a cache of ``S - T`` earlier positions the new queries also see
    all cached keys. (``is_causal=True`` in PyTorch aligns the triangle to the
    top-left instead, which is wrong whenever ``T != S``.)

    Equivalent to ``torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)``.

    Shapes:
        returns: (T, S), dtype bool, True = may attend; broadcasts to (B, H, T, S).
    """
    T = _check_positive_int("T", T)
    S = T if S is None else _check_positive_int("S", S)
    if T > S:
        raise ValueError(f"causal_mask needs T <= S (queries are the last T of S positions), got T={T}, S={S}")
    query_pos = torch.arange(S - T, S, device=device)  # (T,) absolute position of each query
    key_pos = torch.arange(S, device=device)  # (S,)
    return key_pos[None, :] <= query_pos[:, None]  # (1, S) <= (T, 1) -> (T, S)


def _check_attention_mask(attention_mask: object) -> Tensor:
    """Raise ``ValueError`` unless ``attention_mask`` is a (B, S) tensor of 0/1 ints or bools."""
    if not isinstance(attention_mask, Tensor):
        raise ValueError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D (B, S), got shape {tuple(attention_mask.shape)}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise ValueError(f"attention_mask must have an integer or bool dtype, got dtype {attention_mask.dtype}")
    if attention_mask.numel() == 0:
        raise ValueError(f"attention_mask must not be empty, got shape {tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool:
        bad = (attention_mask != 0) & (attention_mask != 1)
        if bool(bad.any()):
            values = torch.unique(attention_mask[bad]).tolist()
            raise ValueError(f"attention_mask must hold only 0 (pad) and 1 (real token), found values {values[:10]}")
    return attention_mask


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Boolean key mask from a tokenizer ``attention_mask``: True where the key is a real token.

    The result has singleton head and query axes, so it broadcasts against the
    attention scores: every query (and every head) ignores the pad keys.

    Shapes:
        attention_mask: (B, S), 1 = real token, 0 = pad (int or bool dtype).
        returns: (B, 1, 1, S), dtype bool, True = may attend.
    """
    attention_mask = _check_attention_mask(attention_mask)
    keep = attention_mask != 0  # (B, S), a new bool tensor (never a view of the input)
    return keep[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def attention_mask_for(attention_mask: Tensor, T: int) -> Tensor:
    """Causal-and-padding mask for ``T`` new queries over the ``S`` positions of ``attention_mask``.

    This is the mask a decoder uses, with or without a KV cache: ``attention_mask``
    covers every position the keys come from (``S = cached + new``), and the ``T``
    queries are the last ``T`` of them. Query ``i`` may attend to key ``j`` when
    ``j <= S - T + i`` (causal, offset-aware) and key ``j`` is a real token.

    Under left padding the pad *queries* at the front see no real key at all; their
    rows are all False, and :func:`attnlab.attention.scaled_dot_product_attention`
    gives them zero weights and a zero output (not NaN).

    Shapes:
        attention_mask: (B, S), 1 = real token, 0 = pad.
        returns: (B, 1, T, S), dtype bool, True = may attend.
    """
    keys = padding_mask(attention_mask)  # (B, 1, 1, S)
    S = attention_mask.shape[1]
    T = _check_positive_int("T", T)
    if T > S:
        raise ValueError(
            f"attention_mask_for needs T <= S: the T={T} queries must be among the S={S} "
            f"positions of attention_mask of shape {tuple(attention_mask.shape)}"
        )
    causal = causal_mask(T, S, device=attention_mask.device)  # (T, S)
    return keys & causal  # (B, 1, 1, S) & (T, S) -> (B, 1, T, S)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that count only real tokens, so left padding does not shift them.

    Each real token gets the number of real tokens before it (0, 1, 2, ...), the
    position it would have if its sequence ran alone. Pad positions get 0: a
    valid index into any position table, and its value never matters because pad
    keys are masked out and pad queries' outputs are ignored. (Hugging Face writes
    ``cumsum - 1`` and then fills the pads with 1; any valid index would do.)

    With a KV cache, the new tokens' positions are the last ``T`` columns of
    ``position_ids(attention_mask)`` for the full ``(B, S)`` mask.

    Shapes:
        attention_mask: (B, S), 1 = real token, 0 = pad.
        returns: (B, S), dtype long.
    """
    attention_mask = _check_attention_mask(attention_mask)
    real = attention_mask != 0  # (B, S) bool
    positions = real.long().cumsum(dim=-1) - 1  # (B, S): index of each real token among the real ones
    return positions.masked_fill(~real, 0)  # out of place: the caller's mask is untouched


def min_value(dtype: torch.dtype) -> float:
    """The most negative finite number of a floating-point ``dtype`` (``torch.finfo(dtype).min``).

    Additive masks put a large negative number on the masked logits. ``-inf`` is
    exact, but a row that is *all* ``-inf`` makes a plain softmax return NaN.
    A hand-picked constant such as ``-1e9`` does not fit in float16 (its largest
    magnitude is 65504), so it becomes ``-inf`` anyway, or ``masked_fill`` refuses
    it. ``finfo(dtype).min`` is finite in every dtype, so a fully masked row gives
    uniform (meaningless but finite) weights. It is not a cure-all in float16:
    ``scores + min_value`` overflows to ``-inf`` once a score is below about -16,
    which is why the package masks with ``-inf`` and uses a softmax that handles
    empty rows instead.

    Shapes:
        returns: a Python float.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"min_value needs a floating-point torch.dtype, got {dtype!r}")
    return torch.finfo(dtype).min


def additive_mask(attn_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a boolean mask (True = may attend) into an additive float mask.

    The result is 0 where attending is allowed and :func:`min_value` where it is
    not, ready to be added to the logits before the softmax (this is what a float
    ``attn_mask`` means to ``torch.nn.functional.scaled_dot_product_attention``).

    Shapes:
        attn_mask: any shape, dtype bool, typically broadcastable to (B, H, T, S).
        returns: the same shape, dtype ``dtype``, on the same device.
    """
    if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
        kind = attn_mask.dtype if isinstance(attn_mask, Tensor) else type(attn_mask).__name__
        raise ValueError(f"additive_mask needs a bool tensor (True = may attend), got {kind}")
    fill = min_value(dtype)
    zeros = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
    return zeros.masked_fill(~attn_mask, fill)
