"""Chapter 6: grouped-query and multi-query attention, checked against PyTorch.

References nobody here wrote: ``torch.repeat_interleave``,
``torch.nn.functional.scaled_dot_product_attention(..., enable_gqa=True)`` and
``torch.nn.MultiheadAttention``. Tolerance: float32 ``atol=1e-5, rtol=0``; the
measured max abs differences and the ``mha_to_gqa`` relative errors are printed
(``pytest -s``).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention import scaled_dot_product_attention
from attnlab.cache import KVCache
from attnlab.gqa import GroupedQueryAttention, kv_bytes_per_token, mha_to_gqa
from attnlab.heads import repeat_kv
from attnlab.multihead import AttentionConfig, MultiHeadAttention

ATOL = 1e-5  # float32
B = 2


def causal(t: int, s: int) -> torch.Tensor:
    """True = may attend; query i sits at position s - t + i."""
    return torch.ones(t, s, dtype=torch.bool).tril(s - t)


def padding(lengths: list[int], s: int) -> torch.Tensor:
    """(B, S) -> (B, 1, 1, S); True = real key (right padding, key 0 always real)."""
    real = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    return real[:, None, None, :]


def make_mask(kind: str, t: int, s: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "causal":
        return causal(t, s)
    if kind == "padding":
        return padding([s, max(1, s - 2)], s)
    return causal(t, s) & padding([s, max(1, s - 2)], s)


def tiled(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """A real bug: ``repeat`` tiles the heads, so query head h gets kv head h % Hkv."""
    return x.repeat(1, n_rep, 1, 1)  # (B, Hkv, S, D) -> (B, Hkv * G, S, D)


# ---------------------------------------------------------------- repeat_kv
@pytest.mark.parametrize("hkv,n_rep", [(1, 4), (2, 3), (4, 2), (3, 1)])
def test_repeat_kv_equals_repeat_interleave(hkv, n_rep):
    x = torch.randn(B, hkv, 5, 8)
    out = repeat_kv(x, n_rep)
    assert out.shape == (B, hkv * n_rep, 5, 8)
    assert torch.equal(out, torch.repeat_interleave(x, n_rep, dim=1))
    for h in range(hkv * n_rep):
        assert torch.equal(out[:, h], x[:, h // n_rep])


def test_repeat_kv_is_identity_for_one_and_does_not_modify_input():
    x = torch.randn(B, 3, 4, 8)
    before = x.clone()
    assert repeat_kv(x, 1) is x
    repeat_kv(x, 2)
    assert torch.equal(x, before)


def test_tiling_with_repeat_is_caught():
    x = torch.randn(B, 2, 5, 8)
    assert not torch.equal(tiled(x, 3), torch.repeat_interleave(x, 3, dim=1))


# ------------------------------------------------- parity with enable_gqa
CASES = [  # (H, Hkv, D, T, S)
    (8, 2, 16, 3, 7),
    (8, 1, 8, 5, 5),
    (6, 3, 4, 1, 9),
    (4, 4, 8, 4, 6),
    (12, 4, 32, 2, 2),
]


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "causal+padding"])
@pytest.mark.parametrize("h,hkv,d,t,s", CASES)
def test_package_attention_on_repeat_kv_matches_sdpa_enable_gqa(h, hkv, d, t, s, kind):
    torch.manual_seed(h * 100 + hkv * 10 + t)
    q = torch.randn(B, h, t, d)
    k, v = torch.randn(B, hkv, s, d), torch.randn(B, hkv, s, d)
    mask = make_mask(kind, t, s)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    out, weights = scaled_dot_product_attention(q, repeat_kv(k, h // hkv), repeat_kv(v, h // hkv), attn_mask=mask)
    assert weights.shape == (B, h, t, s)
    diff = (out - ref).abs().max().item()
    print(f"\n[H={h} Hkv={hkv} D={d} T={t} S={s} {kind}] max|diff| vs sdpa(enable_gqa)={diff:.3g}")
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    if 1 < hkv < h:  # tiling gives another answer (with Hkv=1 or G=1 the two coincide)
        bad, _ = scaled_dot_product_attention(q, tiled(k, h // hkv), tiled(v, h // hkv), attn_mask=mask)
        assert (bad - ref).abs().max() > 1e-3


def module_reference(gqa: GroupedQueryAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The module's own projections, attended by PyTorch's sdpa(enable_gqa=True)."""
    b, t, c = x.shape
    cfg = gqa.config
    # (B, T, H*D) -> (B, T, H, D) -> (B, H, T, D); k, v likewise with Hkv heads
    q = gqa.q_proj(x).view(b, t, cfg.n_heads, cfg.head_dim).transpose(1, 2)
    k = gqa.k_proj(x).view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    v = gqa.v_proj(x).view(b, t, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return gqa.o_proj(out.transpose(1, 2).reshape(b, t, c))  # (B, H, T, D) -> (B, T, C)


@pytest.mark.parametrize("h,hkv", [(8, 2), (8, 1), (6, 3), (4, 4)])
def test_gqa_module_matches_sdpa_enable_gqa(h, hkv):
    torch.manual_seed(3)
    c, t = 8 * h, 5
    gqa = GroupedQueryAttention(AttentionConfig(c, h, n_kv_heads=hkv))
    assert gqa.k_proj.weight.shape == (hkv * (c // h), c)
    x = torch.randn(B, t, c)
    mask = causal(t, t) & padding([t, t - 1], t)
    with torch.no_grad():
        out, weights = gqa(x, attn_mask=mask)
        ref = module_reference(gqa, x, mask)
    assert out.shape == (B, t, c) and weights.shape == (B, h, t, t)
    print(f"\n[GQA H={h} Hkv={hkv}] max|diff| vs module + sdpa(enable_gqa)={(out - ref).abs().max().item():.3g}")
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_gqa_with_hkv_equal_h_equals_mha():
    torch.manual_seed(4)
    cfg = AttentionConfig(32, 4)
    mha = MultiHeadAttention(cfg)
    gqa = GroupedQueryAttention(cfg)
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(B, 6, 32)
    with torch.no_grad():
        a, wa = mha(x, attn_mask=causal(6, 6))
        b, wb = gqa(x, attn_mask=causal(6, 6))
    assert torch.equal(a, b) and torch.equal(wa, wb)


def expanded_torch_mha(gqa: GroupedQueryAttention) -> nn.MultiheadAttention:
    """A PyTorch MHA whose K/V heads are the GQA's, each repeated for its G query heads."""
    cfg = gqa.config
    c, d, g = cfg.d_model, cfg.head_dim, cfg.group_size
    mha = nn.MultiheadAttention(c, cfg.n_heads, batch_first=True).eval()

    def expand(t: torch.Tensor) -> torch.Tensor:
        # (Hkv*D, ...) -> (Hkv, D, ...) -> (H, D, ...) -> (H*D, ...)
        return t.reshape(cfg.n_kv_heads, d, *t.shape[1:]).repeat_interleave(g, dim=0).reshape(c, *t.shape[1:])

    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([gqa.q_proj.weight, expand(gqa.k_proj.weight), expand(gqa.v_proj.weight)]))
        mha.in_proj_bias.copy_(torch.cat([gqa.q_proj.bias, expand(gqa.k_proj.bias), expand(gqa.v_proj.bias)]))
        mha.out_proj.weight.copy_(gqa.o_proj.weight)
        mha.out_proj.bias.copy_(gqa.o_proj.bias)
    return mha


@pytest.mark.parametrize("h,hkv", [(8, 2), (8, 1), (6, 2)])
def test_gqa_equals_torch_mha_with_repeated_kv_heads(h, hkv):
    torch.manual_seed(5)
    c, t = 4 * h, 6
    gqa = GroupedQueryAttention(AttentionConfig(c, h, n_kv_heads=hkv))
    ref = expanded_torch_mha(gqa)
    x = torch.randn(B, t, c)
    with torch.no_grad():
        out, _ = gqa(x, attn_mask=causal(t, t))
        ref_out, _ = ref(x, x, x, attn_mask=~causal(t, t))  # torch: True = may NOT attend
    print(f"\n[GQA H={h} Hkv={hkv}] max|diff| vs torch MHA with repeated K/V={(out - ref_out).abs().max().item():.3g}")
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)


def test_multi_query_attention():
    torch.manual_seed(6)
    h, c, t = 8, 64, 5
    mqa = GroupedQueryAttention(AttentionConfig(c, h, n_kv_heads=1))
    assert mqa.config.group_size == h
    assert mqa.k_proj.weight.shape == (c // h, c) and mqa.v_proj.weight.shape == (c // h, c)
    x = torch.randn(B, t, c)
    with torch.no_grad():
        out, weights = mqa(x, attn_mask=causal(t, t))
        ref = module_reference(mqa, x, causal(t, t))
    assert weights.shape == (B, h, t, t)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_fully_masked_rows_stay_finite():
    gqa = GroupedQueryAttention(AttentionConfig(32, 4, n_kv_heads=2))
    x = torch.randn(B, 4, 32)
    left_pad = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, S)
    with torch.no_grad():
        out, weights = gqa(x, attn_mask=causal(4, 4) & left_pad)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert torch.equal(weights[1, :, :2], torch.zeros_like(weights[1, :, :2]))


# -------------------------------------------------------------- cache hook
def test_cache_stores_only_kv_heads_and_decoding_matches_full():
    torch.manual_seed(7)
    h, hkv, c, t = 8, 2, 64, 6
    gqa = GroupedQueryAttention(AttentionConfig(c, h, n_kv_heads=hkv))
    x = torch.randn(B, t, c)
    cache = KVCache(batch_size=B, n_kv_heads=hkv, capacity=t, head_dim=8)  # refuses H heads
    with torch.no_grad():
        full, _ = gqa(x, attn_mask=causal(t, t))
        parts = [gqa(x[:, :4], attn_mask=causal(4, 4), cache=cache)[0]]
        parts += [gqa(x[:, i : i + 1], cache=cache)[0] for i in range(4, t)]
    assert cache.length == t
    assert cache.nbytes * (h // hkv) == KVCache(batch_size=B, n_kv_heads=h, capacity=t, head_dim=8).nbytes
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)


def test_cache_returning_expanded_heads_is_rejected():
    gqa = GroupedQueryAttention(AttentionConfig(32, 4, n_kv_heads=2))

    class ExpandingCache(KVCache):  # a real bug: caching the repeated K/V saves nothing
        def update(self, k, v):
            return super().update(repeat_kv(k, 2), repeat_kv(v, 2))

    with pytest.raises(ValueError, match=r"Hkv=2"):
        gqa(torch.randn(B, 3, 32), cache=ExpandingCache(batch_size=B, n_kv_heads=4, capacity=3, head_dim=8))


# ------------------------------------------------------------- mha_to_gqa
def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_mha_to_gqa_with_all_heads_is_exact_and_independent():
    torch.manual_seed(8)
    mha = MultiHeadAttention(AttentionConfig(64, 8))
    before = {name: p.detach().clone() for name, p in mha.named_parameters()}
    gqa = mha_to_gqa(mha, 8)
    assert isinstance(gqa, GroupedQueryAttention) and gqa.config.n_kv_heads == 8
    x = torch.randn(B, 5, 64)
    with torch.no_grad():
        a, _ = mha(x, attn_mask=causal(5, 5))
        b, _ = gqa(x, attn_mask=causal(5, 5))
        for p in gqa.parameters():
            p.add_(1.0)
    assert torch.equal(a, b)
    for name, p in mha.named_parameters():
        assert torch.equal(p, before[name]), f"mha_to_gqa changed {name}"


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_mha_to_gqa_is_exact_when_group_heads_already_share_kv(hkv):
    # A checkpoint whose heads in each group have identical K/V weights *is* a GQA model:
    # mean pooling must recover it, and the pooled heads must be consecutive ones.
    torch.manual_seed(9)
    original = GroupedQueryAttention(AttentionConfig(64, 8, n_kv_heads=hkv))
    mha = MultiHeadAttention.from_torch(expanded_torch_mha(original))
    pooled = mha_to_gqa(mha, hkv)
    torch.testing.assert_close(pooled.k_proj.weight, original.k_proj.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled.v_proj.bias, original.v_proj.bias, atol=1e-6, rtol=0)
    x = torch.randn(B, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x)[0], original(x)[0], atol=ATOL, rtol=0)


def test_mha_to_gqa_error_is_finite_and_printed():
    torch.manual_seed(10)
    h, c, t = 8, 64, 16
    mha = MultiHeadAttention(AttentionConfig(c, h))
    x = torch.randn(4, t, c)
    mask = causal(t, t)
    with torch.no_grad():
        ref, _ = mha(x, attn_mask=mask)
        errors = {hkv: relative_error(mha_to_gqa(mha, hkv)(x, attn_mask=mask)[0], ref) for hkv in (8, 4, 2, 1)}
    print("\n[mha_to_gqa, random init H=8] relative error ||y_gqa - y_mha|| / ||y_mha||: "
          + ", ".join(f"Hkv={k}: {e:.4f}" for k, e in errors.items()))
    assert errors[8] == 0.0
    for hkv in (4, 2, 1):
        assert math.isfinite(errors[hkv]) and errors[hkv] > 0.0


def test_mha_to_gqa_pools_consecutive_heads():
    mha = MultiHeadAttention(AttentionConfig(8, 4, bias=False))  # D = 2
    with torch.no_grad():
        # row r of k_proj belongs to head r // D; give head h the constant h
        mha.k_proj.weight.copy_(torch.arange(4).repeat_interleave(2)[:, None].float().expand(8, 8))
    gqa = mha_to_gqa(mha, 2)
    # groups {0, 1} and {2, 3}: means 0.5 and 2.5 (tiled grouping {0, 2}, {1, 3} would give 1 and 2)
    expected = torch.tensor([0.5, 0.5, 2.5, 2.5])[:, None].expand(4, 8)
    assert torch.equal(gqa.k_proj.weight, expected)


# ---------------------------------------------------------- cache sizes
def test_kv_bytes_per_token_published_configs():
    # Llama-2-7B: 32 layers, 32 heads, 32 KV heads, hidden 4096 -> head_dim 128.
    llama2 = kv_bytes_per_token(n_layers=32, n_kv_heads=32, head_dim=128, dtype_bytes=2)
    assert llama2 == 524288 == 2**20 // 2  # 0.5 MiB per token in fp16
    # Llama-3-8B: 32 layers, 32 heads, 8 KV heads, hidden 4096 -> head_dim 128.
    llama3 = kv_bytes_per_token(n_layers=32, n_kv_heads=8, head_dim=128)
    assert llama3 == 131072
    assert llama2 // llama3 == 4  # G = 32 // 8
    assert kv_bytes_per_token(1, 1, 1, dtype_bytes=4) == 8


# ----------------------------------------------------------------- errors
def test_value_errors_name_the_values():
    with pytest.raises(ValueError, match=r"C=10.*H=4"):
        AttentionConfig(10, 4)
    with pytest.raises(ValueError, match=r"H=8.*Hkv=3"):
        AttentionConfig(64, 8, n_kv_heads=3)
    with pytest.raises(ValueError, match=r"n_kv_heads=3"):
        mha_to_gqa(MultiHeadAttention(AttentionConfig(64, 8)), 3)
    with pytest.raises(ValueError, match="n_kv_heads"):
        mha_to_gqa(MultiHeadAttention(AttentionConfig(64, 8)), 0)
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.randn(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match=r"\(B, Hkv, S, D\)"):
        repeat_kv(torch.randn(2, 3, 4), 2)
    for bad in [(0, 8, 128), (32, 8, 128.0), (32, True, 128)]:
        with pytest.raises(ValueError):
            kv_bytes_per_token(*bad)


def test_weight_shape_mismatch_names_the_shapes():
    gqa = GroupedQueryAttention(AttentionConfig(32, 4, n_kv_heads=2))
    # torch stacks 3 full projections (96, 32); this module's q, k, v need 32 + 16 + 16 rows
    with pytest.raises(ValueError, match=r"\(96, 32\).*\(64, 32\)"):
        gqa.load_torch_weights(nn.MultiheadAttention(32, 4, batch_first=True))
    # PyTorch's own load_state_dict refuses too (its RuntimeError, not ours)
    with pytest.raises(RuntimeError, match="size mismatch"):
        gqa.load_state_dict(MultiHeadAttention(AttentionConfig(32, 4)).state_dict())
