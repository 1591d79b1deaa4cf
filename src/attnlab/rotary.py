"""Rotary position embeddings, as in Llama and Hugging Face (chapter 7).

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
"""

import torch
from torch import Tensor


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
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotation angles at ``position_ids``.

    The angles are computed in float32 and cast to ``dtype`` at the end (as in
    Hugging Face's ``LlamaRotaryEmbedding``). Each angle appears twice, at
    channels ``i`` and ``i + D/2``, matching :func:`rotate_half`.

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
    inv_freq = rotary_inv_freq(head_dim, theta, device=position_ids.device)  # (D/2,)
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
