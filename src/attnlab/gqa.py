"""Grouped-query attention: fewer key/value heads than query heads (chapter 6).

Shape legend: ``B`` batch, ``T`` query positions in this call, ``S`` key/value
positions (cached + new), ``H`` query heads, ``Hkv`` key/value heads, ``G = H //
Hkv``, ``D`` head dimension, ``C = H * D`` model width.

Query heads ``g * G ... g * G + G - 1`` share key/value head ``g`` (Ainslie et
al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints"). ``Hkv == 1`` is multi-query attention (Shazeer 2019),
``Hkv == H`` is plain multi-head attention. Only ``Hkv`` heads are projected
and cached; they are expanded to ``H`` heads inside ``attend``, after the
cache update, so a KV cache is ``G`` times smaller than with multi-head
attention.
"""

import torch
from torch import Tensor

from attnlab.heads import repeat_kv
from attnlab.multihead import AttentionConfig, MultiHeadAttention, fast_path_matches_steps


@fast_path_matches_steps
class GroupedQueryAttention(MultiHeadAttention):
    """Multi-head attention whose keys and values have ``Hkv`` heads, ``H % Hkv == 0``.

    Same steps and hooks as ``MultiHeadAttention``; only ``attend`` differs: it
    expands the ``Hkv`` key/value heads to ``H`` with ``repeat_kv`` (query head
    ``h`` uses key/value head ``h // G``). The cache hook therefore stores
    ``Hkv`` heads. The fast path (``need_weights=False``) copies nothing: the
    fused kernel reads each key/value head for its group (``enable_gqa``).

    Shapes:
        x: (B, T, C)
        attn_mask: bool, True = may attend, broadcastable to (B, H, T, S)
        returns: output (B, T, C), weights (B, H, T, S)
    """

    def check_config(self, config: AttentionConfig) -> None:
        """Any valid ``AttentionConfig`` works (it already checked ``H % Hkv == 0``)."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Expand the key/value heads to the query heads, then attend.

        Shapes:
            q: (B, H, T, D); k, v: (B, Hkv, S, D)
            attn_mask: bool, True = may attend, broadcastable to (B, H, T, S)
            returns: out (B, H, T, D), weights (B, H, T, S)
        """
        if k.dim() != 4 or k.shape[1] != self.config.n_kv_heads or v.shape[1] != self.config.n_kv_heads:
            raise ValueError(
                f"k and v must have Hkv={self.config.n_kv_heads} heads, "
                f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        k = repeat_kv(k, self.config.group_size)  # (B, Hkv, S, D) -> (B, H, S, D)
        v = repeat_kv(v, self.config.group_size)  # (B, Hkv, S, D) -> (B, H, S, D)
        return super().attend(q, k, v, attn_mask)


def mha_to_gqa(mha: MultiHeadAttention, n_kv_heads: int) -> GroupedQueryAttention:
    """Convert a checkpoint to ``n_kv_heads`` key/value heads by mean-pooling (GQA paper).

    The key and value projection weights (and biases) of each group of ``G``
    consecutive heads are averaged into one head; the query and output
    projections are copied. The paper then "uptrains" the result briefly; this
    function does only the conversion. With ``n_kv_heads`` equal to the current
    number of key/value heads the output is identical to ``mha``'s. ``mha`` is
    not modified and shares no storage with the result.

    Shapes:
        mha.k_proj.weight: (Hkv_old * D, C) -> (Hkv_old // G, G, D, C) -> mean -> (n_kv_heads * D, C)
        returns: a GroupedQueryAttention with n_kv_heads key/value heads
    """
    if not isinstance(mha, MultiHeadAttention):
        raise ValueError(f"mha must be a MultiHeadAttention, got {type(mha).__name__}")
    old = mha.config
    if not isinstance(n_kv_heads, int) or isinstance(n_kv_heads, bool) or n_kv_heads < 1:
        raise ValueError(f"n_kv_heads must be a positive int, got {n_kv_heads!r}")
    if old.n_heads % n_kv_heads != 0 or old.n_kv_heads % n_kv_heads != 0:
        raise ValueError(
            f"cannot pool n_kv_heads Hkv={old.n_kv_heads} (n_heads H={old.n_heads}) into "
            f"n_kv_heads={n_kv_heads}: it must divide both"
        )
    config = AttentionConfig(
        d_model=old.d_model, n_heads=old.n_heads, n_kv_heads=n_kv_heads, bias=old.bias,
        head_dim=old.head_dim,
    )
    ref = mha.q_proj.weight
    gqa = GroupedQueryAttention(config, device=ref.device, dtype=ref.dtype)
    pool = old.n_kv_heads // n_kv_heads  # old key/value heads per new one
    d, c = old.head_dim, old.d_model
    with torch.no_grad():
        gqa.q_proj.load_state_dict(mha.q_proj.state_dict())  # copies in place, no shared storage
        gqa.o_proj.load_state_dict(mha.o_proj.state_dict())
        for src, dst in ((mha.k_proj, gqa.k_proj), (mha.v_proj, gqa.v_proj)):
            # (Hkv_old * D, C) -> (Hkv, pool, D, C) -> (Hkv, D, C) -> (Hkv * D, C)
            weight = src.weight.reshape(n_kv_heads, pool, d, c).mean(dim=1)
            dst.weight.copy_(weight.reshape(n_kv_heads * d, c))
            if src.bias is not None:
                # (Hkv_old * D,) -> (Hkv, pool, D) -> (Hkv, D) -> (Hkv * D,)
                bias = src.bias.reshape(n_kv_heads, pool, d).mean(dim=1)
                dst.bias.copy_(bias.reshape(n_kv_heads * d))
    return gqa


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """Bytes of K/V cache one token costs: ``2 * n_layers * n_kv_heads * head_dim * dtype_bytes``.

    The 2 counts keys and values. ``dtype_bytes`` is 2 for float16/bfloat16, 4
    for float32. With grouped-query attention ``n_kv_heads`` is ``Hkv``, not
    ``H``, which is where the saving comes from.

    Shapes:
        all arguments are plain ints; returns an int number of bytes.
    """
    for name, value in (
        ("n_layers", n_layers),
        ("n_kv_heads", n_kv_heads),
        ("head_dim", head_dim),
        ("dtype_bytes", dtype_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return 2 * n_layers * n_kv_heads * head_dim * dtype_bytes
