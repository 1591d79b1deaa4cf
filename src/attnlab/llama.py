"""A small Llama-style decoder-only language model built from the package (chapter 7).

Shape legend: ``B`` batch, ``T`` positions in this call, ``S`` key/value
positions (cached + new), ``H`` query heads, ``Hkv`` key/value heads, ``D``
head dimension, ``C`` model width (``H * D`` unless ``head_dim`` is explicit),
``V`` vocabulary size.

The architecture is Llama's (Touvron et al. 2023) and Hugging Face's
``LlamaForCausalLM``: token embedding, ``n_layers`` pre-norm blocks ``x +
attn(rms_norm(x))``, ``x + mlp(rms_norm(x))``, a final RMSNorm and an
``lm_head`` (untied unless ``tie_word_embeddings``). Attention is
:class:`attnlab.gqa.GroupedQueryAttention` whose ``position`` step applies
rotary embeddings; the MLP is gated SiLU. The module and parameter names are
Hugging Face's, without the ``model.`` prefix, so
:func:`load_hf_llama_state_dict` is a renaming, checked key by key, and
:meth:`LlamaLM.from_hf` builds the model a ``transformers.LlamaConfig``
describes, or names the setting it does not support.

``forward(input_ids, attention_mask, position_ids, caches)`` runs ``T`` new
tokens. With ``caches`` (one per layer, see :mod:`attnlab.cache`) the keys are
the cached ones followed by the new ones, ``attention_mask`` covers all ``S``
positions, the causal mask is offset-aware (:func:`attnlab.masks.
attention_mask_for`) and the positions continue from the cached ones.
Generation lives in :mod:`attnlab.generation`.

Two paths compute the same logits. ``LlamaConfig.attention_impl="fast"`` (the
default) checks the inputs once per call, looks the rotary angles up in
tables computed once (:class:`attnlab.rotary.RotaryEmbedding`), builds one
mask per call (none at all without padding: the fused kernel's own causal
mask, or no mask for a single new token), fuses the q/k/v and gate/up
projections and attends with PyTorch's fused kernel.
``attention_impl="teaching"`` runs each step as the chapters write it: the
attention weights materialised by :func:`attnlab.attention.
scaled_dot_product_attention`, key/value heads copied by ``repeat_kv``, rotary
angles and masks rebuilt in every layer. The tests hold the two equal.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention import broadcasts_to
from attnlab.cache import KVCache
from attnlab.fused import FusedLinear, store_for_decoding
from attnlab.gqa import GroupedQueryAttention
from attnlab.masks import _check_attention_mask, attention_mask_for, position_ids as positions_from_mask
from attnlab.multihead import AttentionConfig, KVCacheProtocol, fast_path_matches_steps, has_package_steps
from attnlab.rotary import RopeScaling, RotaryEmbedding, apply_rotary, apply_rotary_signed, rotary_cos_sin

ATTENTION_IMPLS = ("fast", "teaching")


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes and options of the Llama-style model.

    ``n_kv_heads`` defaults to ``n_heads`` (multi-head attention); fewer give
    grouped-query attention, 1 multi-query attention. ``ffn_hidden`` defaults to
    ``4 * d_model``; ``head_dim`` to ``d_model // n_heads``. ``max_seq_len``
    bounds prompt + generated tokens (the default cache capacity and the size
    of the rotary tables). ``rope_scaling`` rescales the rotary frequencies
    (Llama 3.1's ``llama3``, or ``linear``). ``attention_bias`` and
    ``mlp_bias`` give the attention projections and the MLP biases;
    ``tie_word_embeddings`` makes ``lm_head`` share the embedding matrix.
    ``attention_impl`` picks the path: ``"fast"`` or ``"teaching"`` (see the
    module docstring); both give the same logits.

    Shapes:
        d_model: C; head_dim: D (even, for rotary embeddings).
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
    head_dim: int | None = None
    rope_scaling: RopeScaling | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    attention_impl: str = "fast"

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
        for name in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {name}={getattr(self, name)!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(f"rope_scaling must be an attnlab.rotary.RopeScaling or None, got {self.rope_scaling!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got attention_impl={self.attention_impl!r}")
        explicit = self.head_dim is not None
        attention = self.attention_config()  # checks C % H == 0 (unless head_dim is given) and H % Hkv == 0
        object.__setattr__(self, "head_dim", attention.head_dim)
        if attention.head_dim % 2:
            how = "" if explicit else f" = d_model / n_heads = {self.d_model} / {self.n_heads}"
            raise ValueError(f"head_dim D{how} = {attention.head_dim} must be even for rotary embeddings")

    def attention_config(self) -> AttentionConfig:
        """The attention layers' sizes (biases only with ``attention_bias``, as in Llama)."""
        return AttentionConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
            bias=self.attention_bias, head_dim=self.head_dim,
        )


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, computed in float32.

    Like Hugging Face's ``LlamaRMSNorm``: the normalisation runs in float32 and
    is cast back to the input dtype before the weight multiplies it. For
    float32 inputs PyTorch's fused ``F.rms_norm`` computes the same numbers
    (the tests hold them bit-identical) in one operation instead of seven.

    Shapes:
        x: (*, C)
        returns: (*, C)
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


@fast_path_matches_steps
class RotaryAttention(GroupedQueryAttention):
    """Grouped-query attention whose ``position`` step applies rotary embeddings.

    Only ``position`` is overridden (and its fast twin ``rotate_fast``): queries
    and keys are rotated at ``position_ids`` *before* the cache update, so
    cached keys keep the rotation of their own position and are never rotated
    again. ``rope_scaling`` rescales the frequencies (see
    :class:`attnlab.rotary.RopeScaling`).

    Shapes:
        x: (B, T, C); position_ids: (B, T) or (T,)
        returns: output (B, T, C), weights (B, H, T, S)
    """

    def __init__(
        self,
        config: AttentionConfig,
        rope_theta: float = 10000.0,
        device=None,
        dtype=None,
        rope_scaling: RopeScaling | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling

    def position(self, q: Tensor, k: Tensor, position_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """Rotate the new queries and keys at their absolute positions.

        Shapes:
            q: (B, H, T, D); k: (B, Hkv, T, D); position_ids: (B, T) or (T,)
            returns: q (B, H, T, D), k (B, Hkv, T, D)
        """
        if position_ids is None:
            raise ValueError("RotaryAttention needs position_ids (B, T): the absolute position of each new token")
        cos, sin = rotary_cos_sin(
            position_ids, self.config.head_dim, self.rope_theta, dtype=q.dtype, scaling=self.rope_scaling
        )  # (B, T, D)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def rotate_fast(
        self, qk: Tensor, position_ids: Tensor | None, rotary: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """Rotate the query and key heads together, from the model's tables when given.

        Shapes:
            qk: (B, T, H + Hkv, D); rotary: cos, signed sin, each (B, T, D) or (T, D)
            returns: (B, T, H + Hkv, D)
        """
        if rotary is None:
            if position_ids is None:
                raise ValueError("RotaryAttention needs position_ids (B, T): the absolute position of each new token")
            cos, sin = rotary_cos_sin(
                position_ids, self.config.head_dim, self.rope_theta, dtype=qk.dtype, scaling=self.rope_scaling
            )
            half = cos.shape[-1] // 2
            rotary = cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # (.., D): the signed sine
        cos, signed_sin = rotary
        # (B, T, D) -> (B, T, 1, D): the same angles for every head
        return apply_rotary_signed(qk, cos.unsqueeze(-2), signed_sin.unsqueeze(-2))


class GatedMLP(nn.Module):
    """Llama's feed-forward block: ``down(silu(gate(x)) * up(x))``.

    ``forward`` runs the three layers as written; ``forward_fast`` runs gate
    and up as one fused matrix multiplication (:class:`attnlab.fused.FusedLinear`).

    Shapes:
        x: (B, T, C) -> hidden (B, T, ffn_hidden) -> returns (B, T, C)
    """

    def __init__(self, d_model: int, ffn_hidden: int, device=None, dtype=None, bias: bool = False) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(d_model, ffn_hidden, bias=bias, **factory)
        self.up_proj = nn.Linear(d_model, ffn_hidden, bias=bias, **factory)
        self.down_proj = store_for_decoding(nn.Linear(ffn_hidden, d_model, bias=bias, **factory))
        self.gate_up = FusedLinear([self.gate_proj, self.up_proj])

    def _apply(self, fn, recurse=True):
        """After ``.to()``, ``.half()``, ...: re-fuse gate and up (new storage); down takes its layout for decoding."""
        module = super()._apply(fn, recurse)
        self.gate_up.fuse()
        store_for_decoding(self.down_proj)
        return module

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def forward_fast(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, 2F) -> (B, T, F), (B, T, F) views
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(gate) * up)
        # No autograd to feed: overwrite the fused output in place instead of allocating two
        # more (B, T, F) tensors (the same arithmetic, a lower peak of memory in the prefill).
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


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
        self.self_attn = RotaryAttention(
            config.attention_config(), config.rope_theta, rope_scaling=config.rope_scaling, **factory
        )
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_eps, **factory)
        self.mlp = GatedMLP(config.d_model, config.ffn_hidden, bias=config.mlp_bias, **factory)

    def forward(
        self, x: Tensor, attn_mask: Tensor, position_ids: Tensor, cache: KVCacheProtocol | None = None
    ) -> Tensor:
        """The teaching path: every step of the attention module, weights included.

        Shapes:
            x: (B, T, C); attn_mask: bool (B, 1, T, S); position_ids: (B, T)
            returns: (B, T, C)
        """
        attended, _ = self.self_attn(self.input_layernorm(x), attn_mask, position_ids, cache)  # (B, T, C)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_fast(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor],
        position_ids: Tensor,
        cache: KVCacheProtocol | None = None,
    ) -> Tensor:
        """The fast path; an attention module with overridden steps still gets them run.

        Shapes:
            x: (B, T, C); attn_mask: bool, broadcastable to (B, H, T, S), or None
            rotary: cos, signed sin (B, T, D) or (T, D); position_ids: (B, T) or (T,)
            returns: (B, T, C)
        """
        h = self.input_layernorm(x)
        attn = self.self_attn
        if has_package_steps(type(attn)):
            attended = attn.forward_fast(h, attn_mask, position_ids, cache, is_causal, rotary)
        else:
            attended, _ = attn(h, attn_mask, position_ids, cache, need_weights=False, is_causal=is_causal)
        x = x + attended
        mlp = self.mlp
        h = self.post_attention_layernorm(x)
        return x + (mlp.forward_fast(h) if type(mlp) is GatedMLP else mlp(h))


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
    """Llama-style causal language model (random weights unless loaded).

    Parameters are initialised with PyTorch's defaults (``nn.Embedding``:
    normal(0, 1); ``nn.Linear``: uniform Kaiming); RMSNorm weights are ones.

    Shapes:
        input_ids: (B, T) token ids
        attention_mask: (B, S), 1 = real token, 0 = pad; S = cached + T
        position_ids: (B, T)
        returns: logits (B, T, V), or (B, logits_to_keep, V)
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
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # one (V, C) matrix, two uses
        else:
            store_for_decoding(self.lm_head)  # (V, C), stored as (C, V) in float32 on the CPU: attnlab.fused
        # cos and sin of every position, computed once for all layers (not in the state_dict)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling, device=device
        )

    def _apply(self, fn, recurse=True):
        """After ``.to()``, ``.half()``, ...: the untied LM head takes its layout for decoding (attnlab.fused)."""
        module = super()._apply(fn, recurse)
        if not self.config.tie_word_embeddings:
            store_for_decoding(self.lm_head)
        return module

    @classmethod
    def from_hf(
        cls,
        config,
        state_dict: dict[str, Tensor],
        max_seq_len: int | None = None,
        attention_impl: str = "fast",
    ) -> "LlamaLM":
        """The model a ``transformers.LlamaConfig`` describes, holding a copy of ``state_dict``.

        Supported: rotary ``rope_type`` ``default``, ``linear`` and ``llama3``;
        an explicit ``head_dim``; ``attention_bias``; ``mlp_bias``;
        ``tie_word_embeddings``; ``hidden_act="silu"``. Anything else (``yarn``
        and the other rope types, another activation, a partial rotary factor,
        ...) raises ``ValueError`` naming the field, instead of computing
        silently different logits. ``state_dict`` has Hugging Face's key names
        (``model.layers.0.self_attn.q_proj.weight``, ...); the model takes its
        dtype and device. ``max_seq_len`` (default: the config's
        ``max_position_embeddings``) bounds prompt + generated tokens.

        Shapes:
            state_dict: Hugging Face's tensors, e.g. model.embed_tokens.weight (V, C)
        """
        ours = llama_config_from_hf(config, max_seq_len=max_seq_len, attention_impl=attention_impl)
        if not isinstance(state_dict, dict) or "model.embed_tokens.weight" not in state_dict:
            raise ValueError("state_dict must be a Hugging Face Llama state dict with model.embed_tokens.weight")
        ref = state_dict["model.embed_tokens.weight"]
        with torch.device("meta"):  # no random initialisation: every tensor is loaded below
            model = cls(ours, dtype=ref.dtype)
        model.to_empty(device=ref.device)  # real (uninitialised) storage; re-fuses, rebuilds the rotary tables
        if ours.tie_word_embeddings:
            model.lm_head.weight = model.embed_tokens.weight  # to_empty gave them separate storage
        return load_hf_llama_state_dict(model.eval(), state_dict)

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

    def _check_positions(self, position_ids: Tensor, batch: int, new: int) -> None:
        """Raise ``ValueError`` unless ``position_ids`` is (B, T) or (T,) of ints in [0, max_seq_len)."""
        if not isinstance(position_ids, Tensor) or position_ids.is_floating_point() or position_ids.dtype == torch.bool:
            kind = position_ids.dtype if isinstance(position_ids, Tensor) else type(position_ids).__name__
            raise ValueError(f"position_ids must be an integer tensor, got {kind}")
        if tuple(position_ids.shape) not in ((batch, new), (new,)):
            raise ValueError(
                f"position_ids must have shape (B, T) = ({batch}, {new}) or (T,), got {tuple(position_ids.shape)}"
            )
        low, high = (int(x) for x in position_ids.aminmax())  # one host sync, once per call
        if low < 0 or high >= self.config.max_seq_len:
            raise ValueError(
                f"position_ids must lie in [0, max_seq_len={self.config.max_seq_len}), got values from {low} to {high}"
            )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        caches: list | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        """Logits for ``T`` new tokens, after any cached ones.

        ``attention_mask`` covers the cached and the new positions (default: all
        real). ``position_ids`` defaults to the real-token count over the whole
        mask, so left padding does not shift positions and cached decoding
        continues them. Pad query rows attend to nothing and give finite logits
        that mean nothing. The caches are updated in place. ``logits_to_keep=k``
        returns the logits of the last ``k`` positions only (a prefill needs
        just the last one: the LM head is the largest matrix of a small model).

        Shapes:
            input_ids: (B, T)
            attention_mask: (B, S), S = cached + T; position_ids: (B, T)
            returns: logits (B, T, V), or (B, logits_to_keep, V)
        """
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
        batch, new = input_ids.shape
        cached = self._cached_length(caches)
        total = cached + new  # S = cached + T
        if total > self.config.max_seq_len:
            raise ValueError(
                f"sequence of S={total} positions (cached {cached} + T={new}) exceeds "
                f"max_seq_len {self.config.max_seq_len}"
            )
        if logits_to_keep is not None:
            _check_positive_int("logits_to_keep", logits_to_keep)
        if attention_mask is not None and (
            not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (batch, total)
        ):
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
            raise ValueError(
                f"attention_mask must cover the cached and new positions, shape (B, S) = ({batch}, {total}), "
                f"got {shape}"
            )
        if self.config.attention_impl == "teaching":
            if attention_mask is None:
                attention_mask = torch.ones(batch, total, dtype=torch.long, device=input_ids.device)  # (B, S)
            if position_ids is None:
                position_ids = new_token_positions(attention_mask, new)  # (B, T)
            attn_mask = attention_mask_for(attention_mask, new)  # (B, 1, T, S), offset-aware causal & padding
            logits = self.forward_with_mask(input_ids, attn_mask, position_ids, caches)
            return logits if logits_to_keep is None else logits[:, -logits_to_keep:]
        # fast path: one check of the mask, then no padding means no mask at all
        padded = attention_mask is not None and not bool(_check_attention_mask(attention_mask).all())
        if position_ids is None:
            if padded:
                position_ids = new_token_positions(attention_mask, new)  # (B, T)
            else:
                position_ids = torch.arange(cached, total, device=input_ids.device)  # (T,), every row alike
        else:
            self._check_positions(position_ids, batch, new)
        attn_mask = attention_mask_for(attention_mask, new) if padded else None  # (B, 1, T, S)
        rotary = self.rotary(position_ids, self.embed_tokens.weight.dtype)  # cos, signed sin (B, T, D) or (T, D)
        return self.forward_unchecked(
            input_ids, attn_mask, not padded, rotary, position_ids, caches, logits_to_keep
        )

    def forward_with_mask(
        self, input_ids: Tensor, attn_mask: Tensor, position_ids: Tensor, caches: list | None = None
    ) -> Tensor:
        """Logits for ``T`` new tokens with a mask and positions the caller built.

        ``forward`` builds ``attn_mask`` and ``position_ids`` from a tokenizer's
        ``attention_mask``; this is the rest of it, for code (the chapter 7
        exercise, the graders' diagnoses) that builds them itself. The shapes are
        checked, the contents are not: a wrong mask or wrong positions give
        wrong logits, which is the point.

        Shapes:
            input_ids: (B, T); attn_mask: bool, broadcastable to (B, H, T, S), True = may attend
            position_ids: (B, T); caches: n_layers caches or None
            returns: logits (B, T, V)
        """
        layer_caches = caches if caches is not None else [None] * self.config.n_layers
        if len(layer_caches) != self.config.n_layers:
            raise ValueError(f"caches must be a list of n_layers={self.config.n_layers} caches, got {len(layer_caches)}")
        if self.config.attention_impl == "teaching":
            x = self.embed_tokens(input_ids)  # (B, T) -> (B, T, C)
            for block, cache in zip(self.layers, layer_caches):
                x = block(x, attn_mask, position_ids, cache)  # (B, T, C)
            return self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, V)
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {shape}")
        batch, new = input_ids.shape
        if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool or attn_mask.dim() == 0:
            kind = attn_mask.dtype if isinstance(attn_mask, Tensor) else type(attn_mask).__name__
            raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got {kind}")
        # S is what the caches will hold after this call; each layer checks it against the keys.
        scores = (batch, self.config.n_heads, new, attn_mask.shape[-1])
        if not broadcasts_to(attn_mask.shape, scores):
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the attention scores "
                f"(B, H, T, S) = {scores} for T = {new} new tokens"
            )
        self._check_positions(position_ids, batch, new)
        rotary = self.rotary(position_ids, self.embed_tokens.weight.dtype)
        return self.forward_unchecked(input_ids, attn_mask, False, rotary, position_ids, caches)

    def forward_unchecked(
        self,
        input_ids: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor],
        position_ids: Tensor,
        caches: list | None = None,
        logits_to_keep: int | None = None,
    ) -> Tensor:
        """The fast path's layers, for callers that checked everything (generation's decode loop).

        ``attn_mask`` (or ``None``) and ``is_causal`` (the offset-aware causal
        mask, added by :func:`attnlab.attention.sdpa`) are shared by every
        layer; so are the rotary tables' rows ``rotary``.

        Shapes:
            input_ids: (B, T); attn_mask: bool, broadcastable to (B, H, T, S), or None
            rotary: cos, signed sin, each (B, T, D) or (T, D); position_ids: (B, T) or (T,)
            returns: logits (B, T, V), or (B, logits_to_keep, V)
        """
        x = self.embed_tokens(input_ids)  # (B, T) -> (B, T, C)
        layer_caches = caches if caches is not None else [None] * len(self.layers)
        for block, cache in zip(self.layers, layer_caches):
            x = block.forward_fast(x, attn_mask, is_causal, rotary, position_ids, cache)  # (B, T, C)
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]  # (B, T, C) -> (B, k, C)
        return self.lm_head(self.norm(x))  # (B, k, C) -> (B, k, V)


HF_ROPE_TYPES = ("default", "linear", "llama3")


def llama_config_from_hf(hf_config, max_seq_len: int | None = None, attention_impl: str = "fast") -> LlamaConfig:
    """Translate a ``transformers.LlamaConfig`` into a :class:`LlamaConfig`, refusing what we cannot run.

    Reads ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling``
    (transformers 4). Raises ``ValueError`` naming the field for an
    unsupported ``model_type``, ``hidden_act``, ``rope_type`` or
    ``partial_rotary_factor``. (``attention_dropout`` and ``pretraining_tp``
    do not change inference: Hugging Face's Llama ignores them in eval mode.)

    Shapes:
        plain numbers in, a LlamaConfig out.
    """
    def get(name, default=None):
        return getattr(hf_config, name, default)

    model_type = get("model_type")
    if model_type != "llama":
        raise ValueError(f"from_hf needs a transformers LlamaConfig (model_type 'llama'), got model_type={model_type!r}")
    if get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={get('hidden_act')!r} is not supported: attnlab's Llama MLP uses 'silu'")
    params = dict(get("rope_parameters") or {})
    legacy = get("rope_scaling")
    if isinstance(legacy, dict):
        params = {**legacy, **params}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in HF_ROPE_TYPES:
        raise ValueError(
            f"rope_type={rope_type!r} (rope_parameters) is not supported: attnlab supports {HF_ROPE_TYPES}"
        )
    partial = params.get("partial_rotary_factor", get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise ValueError(f"partial_rotary_factor={partial!r} is not supported: attnlab rotates every channel")
    theta = params.get("rope_theta", get("rope_theta", 10000.0))
    max_positions = get("max_position_embeddings", 2048)
    scaling = None
    if rope_type == "linear":
        scaling = RopeScaling("linear", factor=float(params["factor"]))
    elif rope_type == "llama3":
        scaling = RopeScaling(
            "llama3",
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params.get("original_max_position_embeddings", max_positions)),
        )
    hidden, heads = get("hidden_size"), get("num_attention_heads")
    return LlamaConfig(
        vocab_size=get("vocab_size"),
        d_model=hidden,
        n_layers=get("num_hidden_layers"),
        n_heads=heads,
        n_kv_heads=get("num_key_value_heads") or heads,
        ffn_hidden=get("intermediate_size"),
        rope_theta=float(theta),
        rms_eps=float(get("rms_norm_eps", 1e-6)),
        max_seq_len=max_positions if max_seq_len is None else max_seq_len,
        head_dim=get("head_dim") or hidden // heads,
        rope_scaling=scaling,
        attention_bias=bool(get("attention_bias", False)),
        mlp_bias=bool(get("mlp_bias", False)),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        attention_impl=attention_impl,
    )


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
    embedding = source.get("model.embed_tokens.weight")
    if "lm_head.weight" not in source and embedding is not None:
        source["lm_head.weight"] = embedding  # a tied checkpoint may store the matrix once
    head = source.get("lm_head.weight")
    if model.config.tie_word_embeddings and head is not None and embedding is not None and not (
        head.shape == embedding.shape and torch.equal(head, embedding)
    ):
        raise ValueError(
            "tie_word_embeddings=True but the state dict's lm_head.weight differs from "
            "model.embed_tokens.weight: the checkpoint is not tied"
        )
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
