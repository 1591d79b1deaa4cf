"""A small Llama-style decoder-only language model built from the package (chapter 7).

Shape legend: ``B`` batch, ``T`` positions in this call, ``S`` key/value
positions (cached + new), ``H`` query heads, ``Hkv`` key/value heads, ``D``
head dimension, ``C = H * D`` model width, ``V`` vocabulary size.

The architecture is Llama's (Touvron et al. 2023) and Hugging Face's
``LlamaForCausalLM`` without biases: token embedding, ``n_layers`` pre-norm
blocks ``x + attn(rms_norm(x))``, ``x + mlp(rms_norm(x))``, a final RMSNorm and
an untied ``lm_head``. Attention is :class:`attnlab.gqa.GroupedQueryAttention`
whose ``position`` step applies rotary embeddings; the MLP is gated SiLU. The
module and parameter names are Hugging Face's, without the ``model.`` prefix,
so :func:`load_hf_llama_state_dict` is a renaming, checked key by key.

``forward(input_ids, attention_mask, position_ids, caches)`` runs ``T`` new
tokens. With ``caches`` (one per layer, see :mod:`attnlab.cache`) the keys are
the cached ones followed by the new ones, ``attention_mask`` covers all ``S``
positions, the causal mask is offset-aware (:func:`attnlab.masks.
attention_mask_for`) and the positions continue from the cached ones. Greedy
generation lives in :mod:`attnlab.generation`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.cache import KVCache
from attnlab.gqa import GroupedQueryAttention
from attnlab.masks import attention_mask_for, position_ids as positions_from_mask
from attnlab.multihead import AttentionConfig, KVCacheProtocol
from attnlab.rotary import apply_rotary, rotary_cos_sin


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of the small Llama-style model.

    ``n_kv_heads`` defaults to ``n_heads`` (multi-head attention); fewer give
    grouped-query attention, 1 multi-query attention. ``ffn_hidden`` defaults to
    ``4 * d_model``. ``max_seq_len`` bounds prompt + generated tokens (and the
    default cache capacity).

    Shapes:
        d_model: C = H * D; head_dim: D = C // H (even, for rotary embeddings).
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    max_seq_len: int = 256

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.ffn_hidden is None and isinstance(self.d_model, int):
            object.__setattr__(self, "ffn_hidden", 4 * self.d_model)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len"):
            _check_positive_int(name, getattr(self, name))
        for name in ("rope_theta", "rms_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {name}={value!r}")
        attention = self.attention_config()  # checks C % H == 0 and H % Hkv == 0
        if attention.head_dim % 2:
            raise ValueError(
                f"head_dim D = d_model / n_heads = {self.d_model} / {self.n_heads} = {attention.head_dim} "
                f"must be even for rotary embeddings"
            )

    def attention_config(self) -> AttentionConfig:
        """The attention layers' sizes (no biases, as in Llama)."""
        return AttentionConfig(d_model=self.d_model, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, bias=False)

    @property
    def head_dim(self) -> int:
        """D = C // H."""
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, computed in float32.

    Like Hugging Face's ``LlamaRMSNorm``: the normalisation runs in float32 and
    is cast back to the input dtype before the weight multiplies it.

    Shapes:
        x: (*, C)
        returns: (*, C)
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class RotaryAttention(GroupedQueryAttention):
    """Grouped-query attention whose ``position`` step applies rotary embeddings.

    Only ``position`` is overridden: queries and keys are rotated at
    ``position_ids`` *before* the cache update, so cached keys keep the
    rotation of their own position and are never rotated again.

    Shapes:
        x: (B, T, C); position_ids: (B, T) or (T,)
        returns: output (B, T, C), weights (B, H, T, S)
    """

    def __init__(self, config: AttentionConfig, rope_theta: float = 10000.0, device=None, dtype=None) -> None:
        super().__init__(config, device=device, dtype=dtype)
        self.rope_theta = rope_theta

    def position(self, q: Tensor, k: Tensor, position_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """Rotate the new queries and keys at their absolute positions.

        Shapes:
            q: (B, H, T, D); k: (B, Hkv, T, D); position_ids: (B, T) or (T,)
            returns: q (B, H, T, D), k (B, Hkv, T, D)
        """
        if position_ids is None:
            raise ValueError("RotaryAttention needs position_ids (B, T): the absolute position of each new token")
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.rope_theta, dtype=q.dtype)  # (B, T, D)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


class GatedMLP(nn.Module):
    """Llama's feed-forward block: ``down(silu(gate(x)) * up(x))``, no biases.

    Shapes:
        x: (B, T, C) -> hidden (B, T, ffn_hidden) -> returns (B, T, C)
    """

    def __init__(self, d_model: int, ffn_hidden: int, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(d_model, ffn_hidden, bias=False, **factory)
        self.up_proj = nn.Linear(d_model, ffn_hidden, bias=False, **factory)
        self.down_proj = nn.Linear(ffn_hidden, d_model, bias=False, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    Shapes:
        x: (B, T, C); attn_mask: bool (B, 1, T, S); position_ids: (B, T)
        returns: (B, T, C)
    """

    def __init__(self, config: LlamaConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_layernorm = RMSNorm(config.d_model, config.rms_eps, **factory)
        self.self_attn = RotaryAttention(config.attention_config(), config.rope_theta, **factory)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_eps, **factory)
        self.mlp = GatedMLP(config.d_model, config.ffn_hidden, **factory)

    def forward(
        self, x: Tensor, attn_mask: Tensor, position_ids: Tensor, cache: KVCacheProtocol | None = None
    ) -> Tensor:
        attended, _ = self.self_attn(self.input_layernorm(x), attn_mask, position_ids, cache)  # (B, T, C)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))


def new_token_positions(attention_mask: Tensor, T: int) -> Tensor:
    """Positions of the last ``T`` tokens, counting real tokens over the *whole* mask.

    With a cache, ``attention_mask`` covers cached + new positions, so the new
    tokens' positions continue from the cached ones (computing positions over
    the new tokens' columns alone would restart them at 0 every step).

    Shapes:
        attention_mask: (B, S), 1 = real token, 0 = pad
        returns: (B, T), long
    """
    return positions_from_mask(attention_mask)[:, -T:]  # (B, S) -> (B, T)


class LlamaLM(nn.Module):
    """Small Llama-style causal language model (random weights unless loaded).

    Parameters are initialised with PyTorch's defaults (``nn.Embedding``:
    normal(0, 1); ``nn.Linear``: uniform Kaiming); RMSNorm weights are ones.

    Shapes:
        input_ids: (B, T) token ids
        attention_mask: (B, S), 1 = real token, 0 = pad; S = cached + T
        position_ids: (B, T)
        returns: logits (B, T, V)
    """

    def __init__(self, config: LlamaConfig, device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise ValueError(f"config must be an attnlab.llama.LlamaConfig, got {type(config).__name__}")
        self.config = config
        factory = {"device": device, "dtype": dtype}
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, **factory)
        self.layers = nn.ModuleList(LlamaBlock(config, **factory) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.rms_eps, **factory)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, **factory)

    def new_caches(self, batch_size: int, capacity: int | None = None, cache_cls: type = KVCache) -> list:
        """One empty cache per layer, ``Hkv`` heads each, on the model's device and dtype.

        ``capacity`` (default ``max_seq_len``) is the most positions a cache holds.
        ``cache_cls`` is :class:`attnlab.cache.KVCache` or any class with its
        constructor and ``update``/``length`` (e.g. ``ConcatKVCache``).

        Shapes:
            each cache: (B, Hkv, capacity, D) keys and values
        """
        capacity = self.config.max_seq_len if capacity is None else capacity
        _check_positive_int("capacity", capacity)
        if capacity > self.config.max_seq_len:
            raise ValueError(f"capacity {capacity} exceeds the model's max_seq_len {self.config.max_seq_len}")
        ref = self.lm_head.weight
        return [
            cache_cls(
                batch_size=batch_size,
                n_kv_heads=self.config.n_kv_heads,
                capacity=capacity,
                head_dim=self.config.head_dim,
                dtype=ref.dtype,
                device=ref.device,
            )
            for _ in range(self.config.n_layers)
        ]

    def _cached_length(self, caches: list | None) -> int:
        if caches is None:
            return 0
        if not isinstance(caches, (list, tuple)) or len(caches) != self.config.n_layers:
            got = len(caches) if isinstance(caches, (list, tuple)) else type(caches).__name__
            raise ValueError(f"caches must be a list of n_layers={self.config.n_layers} caches, got {got}")
        lengths = [getattr(cache, "length", None) for cache in caches]
        if any(length is None for length in lengths):
            raise ValueError("every cache must have a length attribute (see attnlab.cache.KVCache)")
        if len(set(lengths)) != 1:
            raise ValueError(f"the layers' caches hold different lengths {lengths}")
        return lengths[0]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        caches: list | None = None,
    ) -> Tensor:
        """Logits for ``T`` new tokens, after any cached ones.

        ``attention_mask`` covers the cached and the new positions (default: all
        real). ``position_ids`` defaults to the real-token count over the whole
        mask, so left padding does not shift positions and cached decoding
        continues them. Pad query rows attend to nothing and give finite logits
        that mean nothing. The caches are updated in place.

        Shapes:
            input_ids: (B, T)
            attention_mask: (B, S), S = cached + T; position_ids: (B, T)
            returns: logits (B, T, V)
        """
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
        batch, new = input_ids.shape
        total = self._cached_length(caches) + new  # S = cached + T
        if total > self.config.max_seq_len:
            raise ValueError(
                f"sequence of S={total} positions (cached {total - new} + T={new}) exceeds "
                f"max_seq_len {self.config.max_seq_len}"
            )
        if attention_mask is None:
            attention_mask = torch.ones(batch, total, dtype=torch.long, device=input_ids.device)  # (B, S)
        elif not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (batch, total):
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
            raise ValueError(
                f"attention_mask must cover the cached and new positions, shape (B, S) = ({batch}, {total}), "
                f"got {shape}"
            )
        if position_ids is None:
            position_ids = new_token_positions(attention_mask, new)  # (B, T)
        attn_mask = attention_mask_for(attention_mask, new)  # (B, 1, T, S), offset-aware causal & padding
        return self.forward_with_mask(input_ids, attn_mask, position_ids, caches)

    def forward_with_mask(
        self, input_ids: Tensor, attn_mask: Tensor, position_ids: Tensor, caches: list | None = None
    ) -> Tensor:
        """Logits for ``T`` new tokens with a mask and positions the caller built.

        ``forward`` builds ``attn_mask`` and ``position_ids`` from a tokenizer's
        ``attention_mask``; this is the rest of it, for code (the chapter 7
        exercise, the graders' diagnoses) that builds them itself. Nothing is
        checked against the caches: a wrong mask or wrong positions give wrong
        logits, which is the point.

        Shapes:
            input_ids: (B, T); attn_mask: bool, broadcastable to (B, H, T, S), True = may attend
            position_ids: (B, T); caches: n_layers caches or None
            returns: logits (B, T, V)
        """
        x = self.embed_tokens(input_ids)  # (B, T) -> (B, T, C)
        layer_caches = caches if caches is not None else [None] * self.config.n_layers
        if len(layer_caches) != self.config.n_layers:
            raise ValueError(f"caches must be a list of n_layers={self.config.n_layers} caches, got {len(layer_caches)}")
        for block, cache in zip(self.layers, layer_caches):
            x = block(x, attn_mask, position_ids, cache)  # (B, T, C)
        return self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, V)


def load_hf_llama_state_dict(model: LlamaLM, state_dict: dict[str, Tensor]) -> LlamaLM:
    """Copy a Hugging Face ``LlamaForCausalLM`` state dict into ``model``; return ``model``.

    Names map as ``model.<name>`` -> ``<name>`` (embed_tokens, layers.{i}.self_attn.
    {q,k,v,o}_proj, layers.{i}.mlp.{gate,up,down}_proj, layers.{i}.input_layernorm,
    layers.{i}.post_attention_layernorm, norm) and ``lm_head.weight`` ->
    ``lm_head.weight`` (the embedding when the checkpoint ties them). Linear
    weights are (out, in) in both, so nothing is transposed; Hugging Face's q/k
    projections use the same ``rotate_half`` channel order as
    :mod:`attnlab.rotary`, so nothing is permuted. Missing, unexpected or
    misshapen tensors raise ``ValueError``; rotary ``inv_freq`` buffers are
    ignored. ``state_dict`` is copied, not shared.

    Shapes:
        model.layers.{i}.self_attn.k_proj.weight: (Hkv * D, C) -> layers.{i}.self_attn.k_proj.weight
    """
    if not isinstance(model, LlamaLM):
        raise ValueError(f"model must be an attnlab.llama.LlamaLM, got {type(model).__name__}")
    source = {name: t for name, t in state_dict.items() if not name.endswith("rotary_emb.inv_freq")}
    if "lm_head.weight" not in source and "model.embed_tokens.weight" in source:
        source["lm_head.weight"] = source["model.embed_tokens.weight"]  # tied embeddings
    ours = model.state_dict()
    renamed, missing, misshapen = {}, [], []
    for name, target in ours.items():
        hf_name = name if name == "lm_head.weight" else f"model.{name}"
        if hf_name not in source:
            missing.append(hf_name)
            continue
        tensor = source.pop(hf_name)
        if tensor.shape != target.shape:
            misshapen.append(f"{hf_name} {tuple(tensor.shape)} -> {name} {tuple(target.shape)}")
        renamed[name] = tensor
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if source:
        problems.append(f"unexpected {sorted(source)}")
    if misshapen:
        problems.append(f"shape mismatch {misshapen}")
    if problems:
        raise ValueError("cannot load the Hugging Face Llama state dict: " + "; ".join(problems))
    model.load_state_dict(renamed, strict=True)  # copies into our parameters
    return model
