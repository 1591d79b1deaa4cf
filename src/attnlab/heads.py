"""Splitting a model-width tensor into heads, and back (chapters 5 and 6).

Shape legend: ``B`` batch, ``T`` positions, ``S`` key/value positions, ``H``
query heads, ``Hkv`` key/value heads, ``G = H // Hkv`` query heads per key/value
head, ``D`` head dimension, ``C = H * D`` model width.

Head ``h`` owns the ``D`` consecutive channels ``h * D ... h * D + D - 1`` of
the model width. ``split_heads`` and ``merge_heads`` are exact inverses, and
``repeat_kv`` gives query head ``h`` the key/value head ``h // G``.
"""

from torch import Tensor


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """Cut the last dim of ``x`` into ``n_heads`` heads of ``D = C // n_heads`` channels.

    Head ``h`` gets channels ``h * D`` to ``h * D + D - 1``. The result is a view
    of ``x`` (nothing is copied or modified); ``merge_heads`` undoes it exactly.

    Shapes:
        x: (B, T, C)
        returns: (B, H, T, D) with H = n_heads, D = C // H
    """
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if x.dim() != 3:
        raise ValueError(f"split_heads expects x of shape (B, T, C), got shape {tuple(x.shape)}")
    batch, positions, width = x.shape
    if width % n_heads != 0:
        raise ValueError(
            f"model width C={width} is not divisible by the number of heads H={n_heads}"
        )
    head_dim = width // n_heads
    # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
    return x.reshape(batch, positions, n_heads, head_dim).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """Concatenate the heads of ``x`` back into one model-width vector per position.

    The exact inverse of ``split_heads``: ``merge_heads(split_heads(x, H))``
    equals ``x``. ``x`` is not modified.

    Shapes:
        x: (B, H, T, D)
        returns: (B, T, C) with C = H * D
    """
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects x of shape (B, H, T, D), got shape {tuple(x.shape)}")
    batch, n_heads, positions, head_dim = x.shape
    # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
    return x.transpose(1, 2).reshape(batch, positions, n_heads * head_dim)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times, keeping each head's copies together.

    Output head ``h`` is input head ``h // n_rep`` (``repeat_interleave`` order,
    as in Hugging Face's ``repeat_kv`` and ``torch.nn.functional.
    scaled_dot_product_attention(..., enable_gqa=True)``). Tiling the heads
    with ``x.repeat(1, n_rep, 1, 1)`` would instead give head ``h`` the input
    head ``h % Hkv``: the wrong grouping. With ``n_rep == 1`` ``x`` itself is
    returned.

    Shapes:
        x: (B, Hkv, S, D)
        returns: (B, Hkv * n_rep, S, D)
    """
    if not isinstance(n_rep, int) or isinstance(n_rep, bool) or n_rep < 1:
        raise ValueError(f"n_rep must be a positive int, got {n_rep!r}")
    if x.dim() != 4:
        raise ValueError(f"repeat_kv expects x of shape (B, Hkv, S, D), got shape {tuple(x.shape)}")
    if n_rep == 1:
        return x
    batch, n_kv_heads, positions, head_dim = x.shape
    # (B, Hkv, S, D) -> (B, Hkv, 1, S, D) -> (B, Hkv, G, S, D) -> (B, Hkv * G, S, D)
    expanded = x[:, :, None, :, :].expand(batch, n_kv_heads, n_rep, positions, head_dim)
    return expanded.reshape(batch, n_kv_heads * n_rep, positions, head_dim)
