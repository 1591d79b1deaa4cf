"""Chapter 7: the fast path computes what the teaching path computes.

References, in order of preference: PyTorch's own operations that nobody here
wrote (``F.scaled_dot_product_attention`` with ``torch.nn.attention.bias.
causal_lower_right``, ``F.rms_norm``), then the teaching path, which the earlier
chapters' tests hold against PyTorch and ``transformers``.

Tolerances: float32, ``rtol=0``; ``ATOL = 1e-5`` for logits (measured up to
about 2e-6), ``1e-6`` for single attention layers. Where the fast path is meant
to be bit-identical (rotary tables, the fused RMSNorm) it is checked with
``torch.equal``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

import attnlab.generation
from attnlab.attention import fast_attention
from attnlab.cache import KVCache, StaticKVCache
from attnlab.fused import FusedLinear
from attnlab.generation import generate, generate_with_logits
from attnlab.gqa import GroupedQueryAttention
from attnlab.heads import repeat_kv
from attnlab.llama import LlamaConfig, LlamaLM, RMSNorm
from attnlab.masks import attention_mask_for, causal_mask
from attnlab.multihead import AttentionConfig, MultiHeadAttention, has_package_steps
from attnlab.rotary import RopeScaling, RotaryEmbedding, apply_rotary, apply_rotary_signed, rotary_cos_sin
from attnlab.tokenizer import CharTokenizer

ATOL = 1e-5
TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
PROMPTS = ["the cat sat", "a dog", "hi", "sun and moon"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def twin_models(n_heads=4, n_kv_heads=2, seed=0, **options):
    """The same weights on the fast and on the teaching path."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=n_heads,
                         n_kv_heads=n_kv_heads, ffn_hidden=64, max_seq_len=64, **options)
    fast = LlamaLM(config).eval()
    teaching = LlamaLM(LlamaConfig(**{**config.__dict__, "attention_impl": "teaching"})).eval()
    teaching.load_state_dict(fast.state_dict())
    return fast, teaching


# ======================================================= attention kernels
@pytest.mark.parametrize("h,hkv,t,s", [(4, 4, 5, 5), (4, 2, 3, 9), (6, 1, 1, 7), (4, 2, 7, 7)])
def test_fast_attention_matches_pytorch_bottom_right_causal(h, hkv, t, s):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, h, t, 8), torch.randn(2, hkv, s, 8), torch.randn(2, hkv, s, 8)
    want = F.scaled_dot_product_attention(q, repeat_kv(k, h // hkv), repeat_kv(v, h // hkv),
                                          attn_mask=causal_lower_right(t, s))
    assert torch.allclose(fast_attention(q, k, v, causal=True), want, atol=1e-6, rtol=0)
    pad = torch.ones(2, 1, 1, s, dtype=torch.bool)
    pad[1, ..., :2] = False
    want = F.scaled_dot_product_attention(q, repeat_kv(k, h // hkv), repeat_kv(v, h // hkv),
                                          attn_mask=pad & causal_mask(t, s))
    assert torch.allclose(fast_attention(q, k, v, pad, causal=True), want, atol=1e-6, rtol=0)


def test_fast_attention_refusals_name_the_values():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 3, 5, 8)
    with pytest.raises(ValueError, match=r"multiple.*\(1, 4, 3, 8\).*\(1, 3, 5, 8\)"):
        fast_attention(q, k, k)
    with pytest.raises(ValueError, match="T=3, S=2"):
        fast_attention(q, torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), causal=True)
    with pytest.raises(ValueError, match="attn_mask"):
        fast_attention(q, q, q, torch.ones(3, 3))


@pytest.mark.parametrize("cls,hkv", [(MultiHeadAttention, 4), (GroupedQueryAttention, 2), (GroupedQueryAttention, 1)])
def test_module_fast_path_equals_teaching_path(cls, hkv):
    """need_weights=False (fast) vs True (teaching): full, masked, causal, and cached one token at a time."""
    torch.manual_seed(0)
    layer = cls(AttentionConfig(d_model=32, n_heads=4, n_kv_heads=hkv)).eval()
    x = torch.randn(2, 6, 32)
    pad = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        for mask, causal in [(None, False), (None, True), (attention_mask_for(pad, 6), False)]:
            slow, weights = layer(x, mask, is_causal=causal)
            fast, none = layer(x, mask, is_causal=causal, need_weights=False)
            assert none is None and weights is not None
            assert torch.allclose(fast, slow, atol=1e-6, rtol=0)
        caches = [KVCache(batch_size=2, n_kv_heads=hkv, capacity=6, head_dim=8) for _ in range(2)]
        for t in range(6):
            outs = [layer(x[:, t:t + 1], attention_mask_for(pad[:, :t + 1], 1), cache=c, need_weights=nw)[0]
                    for c, nw in zip(caches, (True, False))]
            assert torch.allclose(outs[0], outs[1], atol=1e-6, rtol=0), f"cached step {t}"


def test_overridden_steps_keep_the_teaching_path():
    """A subclass's own step must run, even when the caller asks for the fast path."""
    calls = []

    class Traced(GroupedQueryAttention):
        def attend(self, q, k, v, attn_mask):
            calls.append(q.shape)
            return super().attend(q, k, v, attn_mask)

    assert has_package_steps(GroupedQueryAttention) and not has_package_steps(Traced)
    layer = Traced(AttentionConfig(d_model=16, n_heads=4, n_kv_heads=2))
    out, weights = layer(torch.randn(1, 3, 16), need_weights=False)
    assert calls and weights is None and out.shape == (1, 3, 16)


# ====================================================== fused projections
def test_fused_linear_shares_storage_and_follows_changes():
    torch.manual_seed(0)
    layers = [nn.Linear(8, 5), nn.Linear(8, 3)]
    fused = FusedLinear(layers)
    x = torch.randn(2, 8)
    with torch.no_grad():  # one GEMM may sum in another order than three: equal to rounding
        assert torch.allclose(fused(x), torch.cat([layer(x) for layer in layers], -1), atol=1e-6, rtol=0)
        # a view, no second copy: input-major on the CPU, layer 1's weight is columns 5.. of one (8, 8) storage
        assert layers[1].weight.data_ptr() == fused.weight.data_ptr() + 5 * 4
        assert fused.weight.t().is_contiguous() and layers[0].weight.stride() == (1, 8)
        layers[0].load_state_dict({"weight": torch.ones(5, 8), "bias": torch.zeros(5)})  # in place
        assert torch.allclose(fused(x)[:, :5], x.sum(-1, keepdim=True).expand(2, 5), atol=1e-6, rtol=0)
        layers[1].weight = nn.Parameter(torch.zeros(3, 8))  # replaced: noticed and re-fused
        assert torch.equal(fused(x)[:, 5:], layers[1].bias.expand(2, 3))
    y = fused(x.requires_grad_())  # with autograd: layer by layer, gradients reach every parameter
    y.sum().backward()
    assert all(layer.weight.grad is not None for layer in layers)


def test_weight_layout_follows_the_device_and_dtype():
    """Input-major in float32 on the CPU, row-major elsewhere (``meta`` stands in for a GPU); values kept."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30, d_model=16, n_layers=1, n_heads=4, n_kv_heads=2, ffn_hidden=32)
    model = LlamaLM(config)

    def matrices():
        block = model.layers[0]
        return [block.self_attn.qkv.weight, block.self_attn.o_proj.weight, block.self_attn.q_proj.weight,
                block.mlp.gate_up.weight, block.mlp.down_proj.weight, model.lm_head.weight]

    def input_major():  # (R, C) with strides (1, R'): each output's weights are a column of the storage
        return [w.stride(0) == 1 and w.stride(1) >= w.shape[0] > 1 for w in matrices()]

    assert all(input_major())
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.to("meta")
    assert all(w.stride(1) == 1 for w in matrices()) and not any(input_major())  # row-major
    model.to_empty(device="cpu").load_state_dict(state)
    assert all(input_major())
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in state.items())
    model.double()  # other dtypes were not faster input-major: row-major
    assert all(w.stride(1) == 1 for w in matrices()) and not any(input_major())
    model.float()
    assert all(input_major())
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in state.items())


def test_model_dtype_change_refuses_stale_fused_weights():
    fast, teaching = twin_models()
    ids, mask = TOK(PROMPTS, padding_side="left")
    fast, teaching = fast.double(), teaching.double()
    with torch.no_grad():
        got, want = fast(ids, mask), teaching(ids, mask)
    assert got.dtype == torch.float64
    assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-10, rtol=0)


# ============================================================ rotary, norm
@pytest.mark.parametrize("scaling", [None, RopeScaling("linear", 4.0), RopeScaling("llama3", 8.0, 1.0, 4.0, 16)])
def test_rotary_tables_are_bit_identical_to_computed_angles(scaling):
    torch.manual_seed(0)
    table = RotaryEmbedding(16, 50, theta=500.0, scaling=scaling)
    positions = torch.randint(0, 50, (3, 7))
    cos, signed_sin = table(positions)
    want_cos, want_sin = rotary_cos_sin(positions, 16, 500.0, scaling=scaling)
    assert torch.equal(cos, want_cos) and torch.equal(signed_sin[..., 8:], want_sin[..., 8:])
    x = torch.randn(3, 2, 7, 16)
    assert torch.equal(apply_rotary_signed(x, cos[:, None], signed_sin[:, None]), apply_rotary(x, want_cos, want_sin))
    half = table.half()  # the tables stay float32, recomputed, not rounded
    assert half.cos.dtype == torch.float32 and torch.equal(half(positions)[0], cos)


def test_rope_scaling_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for params in (dict(rope_type="linear", factor=4.0),
                   dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=64)):
        config = transformers.LlamaConfig(hidden_size=128, num_attention_heads=4, max_position_embeddings=256,
                                          rope_parameters=dict(rope_theta=10000.0, **params))
        want, _ = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
        scaling = RopeScaling(**params)
        cos, _ = rotary_cos_sin(torch.arange(1, 2), 32, 10000.0, scaling=scaling)
        angles = torch.arange(1, 2).float()[:, None] * want  # position 1: the angle is the frequency
        assert torch.allclose(cos[:, :16], angles.cos(), atol=0, rtol=0), params["rope_type"]


def test_fused_rms_norm_is_bit_identical_to_the_float32_formula():
    torch.manual_seed(0)
    for width in (32, 256, 1000):
        norm = RMSNorm(width, eps=1e-5)
        with torch.no_grad():
            norm.weight.normal_()
        x = 3 * torch.randn(4, 9, width)
        x32 = x.float()
        want = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5))
        assert torch.equal(norm(x), want)


# ============================================================ whole model
@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_model_fast_equals_teaching(n_heads, n_kv_heads):
    fast, teaching = twin_models(n_heads, n_kv_heads, seed=n_kv_heads)
    ids, mask = TOK(PROMPTS, padding_side="left")
    real = mask.bool()
    with torch.no_grad():
        assert torch.allclose(fast(ids, mask)[real], teaching(ids, mask)[real], atol=ATOL, rtol=0)
        assert torch.allclose(fast(ids[:1, 1:]), teaching(ids[:1, 1:]), atol=ATOL, rtol=0)  # no padding: is_causal
    for chunk in (None, 3):
        for use_cache in (True, False):
            got = generate_with_logits(fast, ids, mask, 9, use_cache=use_cache, prefill_chunk=chunk)
            want = generate_with_logits(teaching, ids, mask, 9, use_cache=use_cache, prefill_chunk=chunk)
            assert torch.equal(got[0], want[0])
            assert (got[1] - want[1]).abs().max() <= ATOL


def test_last_position_logits_only():
    fast, _ = twin_models()
    ids, mask = TOK(PROMPTS, padding_side="left")
    with torch.no_grad():
        full = fast(ids, mask)
        last = fast(ids, mask, logits_to_keep=1)
    assert last.shape == (4, 1, TOK.vocab_size) and torch.allclose(last, full[:, -1:], atol=ATOL, rtol=0)


def test_forward_with_mask_checks_shapes_at_the_boundary():
    fast, _ = twin_models()
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"does not broadcast.*\(2, 4, 3, 3\)"):
        fast.forward_with_mask(ids, torch.ones(2, 1, 2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_seq_len=64\).*70"):
        fast.forward_with_mask(ids, torch.ones(2, 1, 3, 3, dtype=torch.bool), torch.full((2, 3), 70))


def test_decode_loop_never_reads_back_to_the_host(monkeypatch):
    """Host synchronisations (item, bool, int, tolist) happen before the loop, never per step."""
    fast, _ = twin_models()
    ids, mask = TOK(PROMPTS, padding_side="left")
    counts = []
    for steps in (3, 12):
        reads = [0]
        for name in ("item", "__bool__", "__int__", "tolist", "__index__", "__float__"):
            original = getattr(torch.Tensor, name)

            def counting(self, *args, _original=original, **kwargs):
                reads[0] += 1
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counting)
        generate(fast, ids, mask, steps, prefill_chunk=4)
        monkeypatch.undo()
        counts.append(reads[0])
    assert counts[0] == counts[1], f"host reads grow with the number of steps: {counts}"


# ========================================== static cache (compiled=True), run eagerly
def test_static_cache_writes_at_the_shared_position():
    position = torch.zeros(1, dtype=torch.long)
    cache = StaticKVCache(batch_size=1, n_kv_heads=2, capacity=6, head_dim=4, position=position)
    k1 = torch.randn(1, 2, 3, 4)
    k_all, _ = cache.update(k1, k1.clone())
    assert k_all.shape == (1, 2, 6, 4) and k_all.data_ptr() == cache.k.data_ptr(), "the whole buffer, same address"
    assert torch.equal(k_all[:, :, :3], k1) and int(position) == 0, "update writes; the caller advances position"
    position += 3
    k2 = torch.randn(1, 2, 1, 4)
    cache.update(k2, k2.clone())
    assert torch.equal(cache.k[:, :, 3:4], k2) and not cache.k[:, :, 4:].any()


@pytest.mark.parametrize("padded,chunk", [(False, None), (True, None), (True, 3)])
def test_static_decode_loop_equals_the_dynamic_one(monkeypatch, padded, chunk):
    """The loop of compiled=True (whole-capacity attention, position in a tensor), without compiling it.

    Compiling takes tens of seconds, too long for this suite; ``benchmarks/vs_hf.py`` runs the
    compiled step and checks its greedy tokens against ``transformers``.
    """
    monkeypatch.setattr(attnlab.generation, "compiled_decode_step",
                        lambda device: attnlab.generation._static_decode_step)
    fast, _ = twin_models()
    ids, mask = TOK(PROMPTS if padded else PROMPTS[:1], padding_side="left")
    want = generate_with_logits(fast, ids, mask, 9, prefill_chunk=chunk)
    got = generate_with_logits(fast, ids, mask, 9, prefill_chunk=chunk, compiled=True)
    assert torch.equal(got[0], want[0])
    assert (got[1] - want[1]).abs().max() <= ATOL


def test_compiled_refuses_what_it_cannot_run():
    fast, teaching = twin_models()
    ids, mask = TOK(PROMPTS[:1])
    with pytest.raises(ValueError, match="use_cache=False"):
        generate(fast, ids, mask, 3, use_cache=False, compiled=True)
    with pytest.raises(ValueError, match="attention_impl='teaching'"):
        generate(teaching, ids, mask, 3, compiled=True)


def test_models_built_or_refused_inside_inference_mode():
    ids, mask = TOK(PROMPTS, padding_side="left")
    with torch.inference_mode():
        built, _ = twin_models()  # its parameters are inference tensors: fusing must follow
        assert generate(built, ids, mask, 3).shape == (4, 3)
    fast, _ = twin_models()
    layer = fast.layers[0].self_attn
    layer.k_proj.weight = nn.Parameter(torch.randn_like(layer.k_proj.weight))
    with torch.inference_mode():
        generate(fast, ids, mask, 3)  # re-fuses here, inside inference_mode ...
    assert not layer.k_proj.weight.is_inference()  # ... yet the parameter stays trainable
    fast(ids, mask).sum().backward()
    assert layer.k_proj.weight.grad is not None
