"""Reference implementations for *Attention from Scratch*.

Each chapter of the course builds one idea up line by line and then imports the
version that lives here; later chapters import earlier ideas instead of
redefining them.
"""

from attnlab.attention import fast_attention, scaled_dot_product_attention, stable_softmax
from attnlab.cache import ConcatKVCache, KVCache, StaticKVCache, cache_nbytes
from attnlab.flash import merge_partials, online_softmax, online_softmax_stats, split_k_attention, tiled_attention
from attnlab.generation import generate, generate_with_logits, stream_generate
from attnlab.gqa import GroupedQueryAttention, kv_bytes_per_token, mha_to_gqa
from attnlab.heads import merge_heads, repeat_kv, split_heads
from attnlab.llama import LlamaConfig, LlamaLM, RMSNorm, RotaryAttention, load_hf_llama_state_dict
from attnlab.masks import additive_mask, attention_mask_for, causal_mask, min_value, padding_mask, position_ids
from attnlab.multihead import AttentionConfig, KVCacheProtocol, MultiHeadAttention, copy_torch_mha_weights
from attnlab.positions import (
    apply_rotary_interleaved,
    half_split_channel_order,
    half_split_to_interleaved,
    interleaved_to_half_split,
    relative_position_error,
    sinusoidal_embeddings,
)
from attnlab.rotary import RopeScaling, apply_rotary, rotary_cos_sin, rotate_half
from attnlab.tokenizer import CharTokenizer

__all__ = [
    "AttentionConfig",
    "CharTokenizer",
    "ConcatKVCache",
    "GroupedQueryAttention",
    "KVCache",
    "KVCacheProtocol",
    "LlamaConfig",
    "LlamaLM",
    "MultiHeadAttention",
    "RMSNorm",
    "RopeScaling",
    "RotaryAttention",
    "StaticKVCache",
    "apply_rotary",
    "apply_rotary_interleaved",
    "cache_nbytes",
    "copy_torch_mha_weights",
    "fast_attention",
    "generate",
    "generate_with_logits",
    "half_split_channel_order",
    "half_split_to_interleaved",
    "interleaved_to_half_split",
    "load_hf_llama_state_dict",
    "merge_partials",
    "online_softmax",
    "online_softmax_stats",
    "split_k_attention",
    "tiled_attention",
    "rotary_cos_sin",
    "rotate_half",
    "additive_mask",
    "attention_mask_for",
    "causal_mask",
    "kv_bytes_per_token",
    "merge_heads",
    "mha_to_gqa",
    "min_value",
    "padding_mask",
    "position_ids",
    "relative_position_error",
    "repeat_kv",
    "scaled_dot_product_attention",
    "sinusoidal_embeddings",
    "split_heads",
    "stable_softmax",
    "stream_generate",
]
