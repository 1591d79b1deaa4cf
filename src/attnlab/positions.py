"""Position information for attention: sinusoids, and the two pairings of rotary embeddings (chapter 3).

Shape legend: ``B`` batch, ``T`` positions in this call, ``H`` heads (``H`` or
``Hkv``), ``D`` head dimension (even), ``C`` model width.

Attention alone cannot tell positions apart: permuting the tokens permutes its
outputs in the same way. Two families of fixes:

* **absolute** embeddings, added to the token embeddings once: the sinusoids of
  Vaswani et al. (2017), :func:`sinusoidal_embeddings`, or a learned table;
* **rotary** embeddings (Su et al. 2021), which rotate every query and key by
  angles proportional to its position, so that a score depends only on the
  distance ``n - m`` between query and key (:func:`relative_position_error`
  measures that property for any rotation function).

Rotary embeddings pair the ``D`` channels of a head in one of two ways, with the
same angles (``rotary_cos_sin`` in :mod:`attnlab.rotary`):

* **half-split** (Hugging Face's ``rotate_half``, GPT-NeoX): channel ``i`` with
  channel ``i + D/2`` — :func:`attnlab.rotary.apply_rotary`;
* **interleaved** (RoFormer, Meta's original Llama code, GPT-J): channel ``2i``
  with channel ``2i + 1`` — :func:`apply_rotary_interleaved`.

The two are the same rotation up to a fixed reordering of the channels
(:func:`half_split_channel_order`). A checkpoint trained with one pairing runs
correctly with the other only after the rows of its query and key projections
are reordered the same way inside every head: :func:`interleaved_to_half_split`
(Meta to Hugging Face, what ``convert_llama_weights_to_hf.py`` does) and
:func:`half_split_to_interleaved` (back). Forgetting it raises no error: the
model runs and is silently wrong at every position but 0.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from attnlab.rotary import apply_rotary, rotary_cos_sin


def _check_head_dim(head_dim: object) -> None:
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2 (channels come in pairs), got head_dim={head_dim!r}")


def _check_positions(positions: object, name: str) -> None:
    if not isinstance(positions, Tensor) or positions.dim() not in (1, 2):
        shape = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions).__name__
        raise ValueError(f"{name} must be a (B, T) or (T,) tensor, got {shape}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {positions.dtype}")


def sinusoidal_embeddings(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """The absolute position embeddings of "Attention Is All You Need" (section 3.5).

    ``PE[p, 2i] = sin(p * w_i)`` and ``PE[p, 2i + 1] = cos(p * w_i)`` with
    ``w_i = base^(-2i / dim)``: the paper's interleaved layout. Computed in
    float32; add it to the token embeddings before the first layer.

    Shapes:
        positions: (T,) or (B, T), integer
        returns: (T, C) or (B, T, C) with C = dim, float32
    """
    _check_positions(positions, "positions")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2 (sin and cos come in pairs), got dim={dim!r}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0:
        raise ValueError(f"base must be a positive number, got base={base!r}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim  # (C/2,) = 2i / C
    angles = positions[..., None].float() * float(base) ** -exponents  # (*, T, 1) * (C/2,) -> (*, T, C/2)
    # (*, T, C/2) twice -> (*, T, C/2, 2) -> (*, T, C): sin at even channels, cos at odd ones
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def half_split_channel_order(head_dim: int) -> Tensor:
    """Channel order that turns the interleaved pairing into the half-split one.

    ``order = [0, 2, 4, ..., D-2, 1, 3, ..., D-1]``: the first channel of every
    interleaved pair ``(2i, 2i + 1)`` goes to the first half, the second to the
    second half, so the pair lands on ``(i, i + D/2)``. For any vector ``x`` in
    the interleaved layout, ``x[..., order]`` is the same vector in the
    half-split layout, and ``y[..., order.argsort()]`` goes back.

    Shapes:
        returns: (D,), torch.long
    """
    _check_head_dim(head_dim)
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def apply_rotary_interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embeddings with Meta's and RoFormer's pairing: channel ``2i`` with ``2i + 1``.

    Takes the same ``cos`` and ``sin`` tables as :func:`attnlab.rotary.
    apply_rotary` (from ``rotary_cos_sin``): pair ``i`` is rotated by the angle
    of ``cos[..., i]``, ``sin[..., i]``. It is the half-split rotation applied
    in the half-split channel order: ``x`` is reordered with
    :func:`half_split_channel_order`, rotated, and put back, so both pairings
    rotate every pair by the same angle. ``x`` is not modified.

    Equal to Meta's ``apply_rotary_emb`` (complex multiplication by
    ``torch.polar(1, angle)`` of ``view_as_complex(x.reshape(..., D/2, 2))``).

    Shapes:
        x: (B, H, T, D)
        cos, sin: (B, T, D) or (T, D)
        returns: (B, H, T, D)
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (B, H, T, D), got {shape}")
    if x.shape[-1] % 2:
        raise ValueError(f"the head dimension D={x.shape[-1]} of x must be even: channels are rotated in pairs")
    order = half_split_channel_order(x.shape[-1]).to(x.device)  # (D,)
    rotated = apply_rotary(x[..., order], cos, sin)  # (B, H, T, D), half-split layout
    return rotated[..., order.argsort()]  # back to the interleaved layout


def _reorder_rows(weight: Tensor, n_heads: int, order_of: Callable[[int], Tensor]) -> Tensor:
    """Reorder the ``D`` rows of every head of a projection weight (or bias)."""
    if not isinstance(weight, Tensor) or weight.dim() not in (1, 2):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a (H * D, C) projection weight or a (H * D,) bias, got {shape}")
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got n_heads={n_heads!r}")
    rows = weight.shape[0]
    if rows % n_heads:
        raise ValueError(f"weight has {rows} rows, not divisible into n_heads={n_heads} heads")
    head_dim = rows // n_heads
    if head_dim % 2:
        raise ValueError(f"head dimension D = {rows} rows / n_heads={n_heads} = {head_dim} must be even")
    order = order_of(head_dim).to(weight.device)  # (D,)
    per_head = weight.unflatten(0, (n_heads, head_dim))  # (H * D, *) -> (H, D, *)
    return per_head[:, order].flatten(0, 1)  # a new tensor: (H, D, *) -> (H * D, *)


def interleaved_to_half_split(weight: Tensor, n_heads: int) -> Tensor:
    """Convert a query or key projection from the interleaved pairing to the half-split one.

    This is the permutation Hugging Face applies to Meta's Llama checkpoints
    (``permute`` in ``convert_llama_weights_to_hf.py``): inside every head, row
    ``2i`` moves to row ``i`` and row ``2i + 1`` to row ``i + D/2``. A model
    whose attention uses :func:`attnlab.rotary.apply_rotary` then computes the
    same scores as the original with :func:`apply_rotary_interleaved`. Apply it
    to ``q_proj`` with ``n_heads = H`` and to ``k_proj`` with ``n_heads = Hkv``;
    ``v_proj`` and ``o_proj`` are not rotated and stay as they are. Returns a
    new tensor; ``weight`` is not modified.

    Shapes:
        weight: (H * D, C) (an ``nn.Linear`` weight) or (H * D,) (a bias)
        returns: the same shape and dtype
    """
    return _reorder_rows(weight, n_heads, half_split_channel_order)


def half_split_to_interleaved(weight: Tensor, n_heads: int) -> Tensor:
    """The inverse of :func:`interleaved_to_half_split` (Hugging Face to Meta's layout).

    Inside every head, row ``i`` moves to row ``2i`` and row ``i + D/2`` to row
    ``2i + 1``, as converters to interleaved-rotary runtimes do (llama.cpp's
    ``convert_hf_to_gguf.py``). Returns a new tensor; ``weight`` is not modified.

    Shapes:
        weight: (H * D, C) or (H * D,)
        returns: the same shape and dtype
    """
    return _reorder_rows(weight, n_heads, lambda head_dim: half_split_channel_order(head_dim).argsort())


def relative_position_error(
    rotate: Callable[[Tensor, Tensor], Tensor],
    head_dim: int,
    max_position: int = 64,
    seed: int = 0,
) -> float:
    """How far the scores of ``rotate`` are from depending on ``n - m`` only.

    Rotates one random query and one random key to every position
    ``0 .. max_position - 1`` and forms all scores ``s[m, n] = <rotate(q, m),
    rotate(k, n)>``. A relative position encoding makes ``s`` constant along
    each diagonal ``n - m = d`` (a Toeplitz matrix), for every ``d`` of either
    sign; the result is the largest ``|s[m, n] - s[m', n']|`` with ``n - m =
    n' - m'``, in float64 (``inf`` if a score is not finite): about 1e-5 for a
    correct rotary function in float32 (the angles round), of the order of the
    scores for an absolute encoding. A ``rotate`` that
    ignores positions also gives 0: it is relative, and encodes nothing.

    ``rotate(x, positions)`` takes ``x`` of shape (1, 1, P, D) and integer
    ``positions`` of shape (P,), and returns the rotated (1, 1, P, D).

    Shapes:
        scores: (P, P) with P = max_position
    """
    _check_head_dim(head_dim)
    if not isinstance(max_position, int) or isinstance(max_position, bool) or max_position < 2:
        raise ValueError(f"max_position must be an int >= 2, got max_position={max_position!r}")
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)  # one query and one key, (1, 1, 1, D) each
    positions = torch.arange(max_position)  # (P,)
    rotated_q = rotate(q.expand(1, 1, max_position, head_dim), positions)[0, 0].double()  # (P, D)
    rotated_k = rotate(k.expand(1, 1, max_position, head_dim), positions)[0, 0].double()  # (P, D)
    scores = rotated_q @ rotated_k.T  # (P, D) @ (D, P) -> (P, P): s[m, n]
    if not torch.isfinite(scores).all():
        return float("inf")
    worst = 0.0
    for offset in range(-max_position + 1, max_position):
        diagonal = scores.diagonal(offset)  # every (m, n) with n - m = offset
        worst = max(worst, (diagonal - diagonal[0]).abs().max().item())
    return worst
