"""Rotary position embeddings, as in Llama and Hugging Face (chapters 3 and 7).

Shape legend: ``B`` batch, ``T`` positions in this call, ``H`` heads (``H`` or
``Hkv``), ``D`` head dimension (even).

Rotary embeddings (Su et al. 2021, "RoFormer") rotate each pair of channels of a
query or key by an angle ``position * inv_freq[i]`` with ``inv_freq[i] = 1 /
theta^(2i / D)``. The dot product of a rotated query at position ``m`` and a
rotated key at position ``n`` then depends on ``m - n`` only. The pairs follow
Hugging Face's ``rotate_half`` convention: channel ``i`` is paired with channel
``i + D/2`` (not ``2i`` with ``2i + 1`` as in the paper), so weights from a
Hugging Face Llama checkpoint work unchanged.

Positions come from ``position_ids``, one row per sequence: under left padding
they count real tokens only, and with a KV cache they continue from the cached
ones (see :func:`attnlab.masks.position_ids`).

Long-context checkpoints rescale the frequencies: ``linear`` divides all of
them by a factor (position interpolation), ``llama3`` (Llama 3.1 and later)
divides only the low frequencies and blends the middle band; see
:class:`RopeScaling`. :class:`RotaryEmbedding` computes the cosine and sine
tables once per model and looks positions up in them, instead of recomputing
the angles in every layer at every step.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ROPE_TYPES = ("linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """Frequency scaling of a long-context checkpoint (Hugging Face's ``rope_parameters``).

    ``rope_type="linear"`` divides every frequency by ``factor`` (position
    interpolation, Chen et al. 2023). ``rope_type="llama3"`` keeps the high
    frequencies (wavelength below ``original_max_position_embeddings /
    high_freq_factor``), divides the low ones (wavelength above
    ``original_max_position_embeddings / low_freq_factor``) by ``factor`` and
    interpolates smoothly in between, as Meta's Llama 3.1 code does.

    Shapes:
        all fields are plain numbers.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got rope_type={self.rope_type!r}")
        numbers = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        for name in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {name}={value!r}")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"llama3 rope scaling needs high_freq_factor > low_freq_factor, got "
                f"high_freq_factor={self.high_freq_factor}, low_freq_factor={self.low_freq_factor}"
            )


def scale_inv_freq(inv_freq: Tensor, scaling: RopeScaling | None) -> Tensor:
    """Apply ``scaling`` to the frequencies of :func:`rotary_inv_freq` (a new tensor).

    Shapes:
        inv_freq: (D // 2,), float32
        returns: (D // 2,), float32
    """
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    # llama3: the same arithmetic, in the same order, as Meta's and Hugging Face's code.
    context = scaling.original_max_position_embeddings
    low_freq_wavelen = context / scaling.low_freq_factor
    high_freq_wavelen = context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq  # (D/2,)
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotary_inv_freq(head_dim: int, theta: float = 10000.0, device: torch.device | str | None = None) -> Tensor:
    """Angular frequency of each channel pair: ``1 / theta^(2i / D)``, ``i = 0 .. D/2 - 1``.

    Computed in float32, as Hugging Face does, whatever the model's dtype.

    Shapes:
        returns: (D // 2,), float32
    """
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even int >= 2 for rotary embeddings, got head_dim={head_dim!r}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise ValueError(f"theta must be a positive number, got theta={theta!r}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim  # (D/2,) = 2i / D
    return 1.0 / (float(theta) ** exponents)


def rotary_cos_sin(
    position_ids: Tensor,
    head_dim: int,
    theta: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    scaling: "RopeScaling | None" = None,
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotation angles at ``position_ids``.

    The angles are computed in float32 and cast to ``dtype`` at the end (as in
    Hugging Face's ``LlamaRotaryEmbedding``). Each angle appears twice, at
    channels ``i`` and ``i + D/2``, matching :func:`rotate_half`. ``scaling``
    rescales the frequencies of a long-context checkpoint (:class:`RopeScaling`).

    Shapes:
        position_ids: (B, T) or (T,), integer positions
        returns: cos, sin, each (B, T, D) or (T, D), dtype ``dtype``
    """
    if not isinstance(position_ids, Tensor) or position_ids.dim() not in (1, 2):
        shape = tuple(position_ids.shape) if isinstance(position_ids, Tensor) else type(position_ids).__name__
        raise ValueError(f"position_ids must be a (B, T) or (T,) tensor, got {shape}")
    if position_ids.is_floating_point() or position_ids.is_complex() or position_ids.dtype == torch.bool:
        raise ValueError(f"position_ids must be an integer tensor, got dtype {position_ids.dtype}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    inv_freq = scale_inv_freq(rotary_inv_freq(head_dim, theta, device=position_ids.device), scaling)  # (D/2,)
    angles = position_ids[..., None].float() * inv_freq  # (B, T, 1) * (D/2,) -> (B, T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, D/2) -> (B, T, D): channel i and i + D/2
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dim (Hugging Face convention).

    Shapes:
        x: (*, D), D even
        returns: (*, D)
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (*, D) -> (*, D/2), (*, D/2)
    return torch.cat((-x2, x1), dim=-1)  # -> (*, D)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the queries or keys ``x`` by the angles of ``cos`` and ``sin``.

    ``x * cos + rotate_half(x) * sin``: each channel pair ``(i, i + D/2)`` is
    rotated by its angle; norms are preserved. ``x`` is not modified.

    Shapes:
        x: (B, H, T, D)
        cos, sin: (B, T, D) (one row of positions per sequence) or (T, D)
        returns: (B, H, T, D)
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (B, H, T, D), got {shape}")
    if not isinstance(cos, Tensor) or not isinstance(sin, Tensor) or cos.shape != sin.shape:
        raise ValueError("cos and sin must be tensors of one shape (B, T, D) or (T, D)")
    batch, _, positions, dim = x.shape
    want = ((batch, positions, dim), (positions, dim))
    if tuple(cos.shape) not in want:
        raise ValueError(
            f"cos/sin of shape {tuple(cos.shape)} do not fit x of shape {tuple(x.shape)}: "
            f"expected {want[0]} or {want[1]}"
        )
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, T, D) -> (B, 1, T, D): the same angles for every head
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Cosine and sine tables of every position up to ``max_positions``, computed once.

    One instance serves every layer of a model: the angles depend on the
    positions only, never on the layer. ``forward(position_ids)`` gathers the
    rows of the positions asked for, cast to ``dtype``; the values are those of
    :func:`rotary_cos_sin` (angles in float32, then ``cos``/``sin``, then the
    cast), so either way gives bit-identical rotations. The tables are
    non-persistent buffers: they follow ``.to(device)`` but stay out of the
    ``state_dict``.

    The sine table is stored *signed*, ``(-sin, +sin)`` on the two halves, so
    that ``rotate_half(x) * sin == x.roll(D // 2, -1) * signed_sin`` exactly
    (negation is exact): :func:`apply_rotary_signed` rotates with one ``roll``
    instead of two slices, a negation and a ``cat``.

    Shapes:
        cos, signed_sin buffers: (max_positions, D), float32
        forward: position_ids (B, T) -> cos, signed_sin, each (B, T, D) of ``dtype``
    """

    def __init__(
        self,
        head_dim: int,
        max_positions: int,
        theta: float = 10000.0,
        scaling: RopeScaling | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(max_positions, int) or isinstance(max_positions, bool) or max_positions < 1:
            raise ValueError(f"max_positions must be a positive int, got max_positions={max_positions!r}")
        if scaling is not None and not isinstance(scaling, RopeScaling):
            raise ValueError(f"scaling must be a RopeScaling or None, got {type(scaling).__name__}")
        self.head_dim, self.max_positions, self.theta, self.scaling = head_dim, max_positions, theta, scaling
        cos, signed_sin = self._tables(device)
        self.register_buffer("cos", cos, persistent=False)  # (P, D)
        self.register_buffer("signed_sin", signed_sin, persistent=False)  # (P, D)

    def _tables(self, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        """cos and signed sin of every position, in float32.

        Shapes:
            returns: (P, D), (P, D) with P = max_positions
        """
        inv_freq = scale_inv_freq(rotary_inv_freq(self.head_dim, self.theta, device=device), self.scaling)
        positions = torch.arange(self.max_positions, device=device, dtype=torch.float32)  # (P,)
        angles = positions[:, None] * inv_freq  # (P, 1) * (D/2,) -> (P, D/2)
        cos, sin = angles.cos(), angles.sin()  # (P, D/2) each
        return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)  # (P, D) each

    def _apply(self, fn, recurse=True):
        """Follow ``.to(device)`` but keep the tables float32, recomputed (``.half()`` would round them)."""
        super()._apply(fn, recurse)
        self.cos, self.signed_sin = self._tables(self.cos.device)
        return self

    def forward(self, position_ids: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Look up the tables at ``position_ids`` (no checks: positions must be < max_positions).

        Shapes:
            position_ids: (B, T) or (T,), integer
            returns: cos, signed_sin, each (B, T, D) or (T, D), dtype ``dtype``
        """
        return self.cos[position_ids].to(dtype), self.signed_sin[position_ids].to(dtype)


def apply_rotary_signed(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """``x * cos + x.roll(D // 2, -1) * signed_sin``: :func:`apply_rotary` with fewer operations.

    Equal to ``apply_rotary(x, cos, sin)`` bit for bit when ``signed_sin`` is
    ``(-sin, sin)`` on the two halves (as :class:`RotaryEmbedding` stores it).
    No checks: the caller makes ``cos`` broadcast against ``x``.

    Shapes:
        x: (*, D); cos, signed_sin: broadcastable to x
        returns: the shape of x
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
