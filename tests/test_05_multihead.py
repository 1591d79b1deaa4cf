"""Chapter 5: head split/merge and multi-head attention, checked against PyTorch.

The reference is ``torch.nn.MultiheadAttention(batch_first=True)``, code nobody
here wrote. Tolerance: float32 ``atol=1e-5, rtol=0``, float64 ``atol=1e-12``;
the measured max abs differences are printed (``pytest -s``).

Mask conventions differ: ours is True = may attend; PyTorch's ``attn_mask`` and
``key_padding_mask`` of ``nn.MultiheadAttention`` are True = may NOT attend, so
the tests pass ``~mask`` to PyTorch.
"""

import math

import pytest
import torch
from torch import nn

from attnlab.attention import scaled_dot_product_attention
from attnlab.cache import KVCache
from attnlab.heads import merge_heads, split_heads
from attnlab.multihead import AttentionConfig, MultiHeadAttention

B, T, C, H = 2, 6, 32, 4
D = C // H
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def make_torch_mha(
    d_model: int = C, n_heads: int = H, bias: bool = True, dtype: torch.dtype = torch.float32
) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True, dtype=dtype)
    if bias:  # PyTorch initialises the biases to zero; make them count
        with torch.no_grad():
            mha.in_proj_bias.normal_(0.0, 0.5)
            mha.out_proj.bias.normal_(0.0, 0.5)
    return mha.eval()


def causal(t: int, s: int) -> torch.Tensor:
    """True = may attend; query i sits at position s - t + i."""
    return torch.ones(t, s, dtype=torch.bool).tril(s - t)


def right_padding(lengths: list[int], s: int) -> torch.Tensor:
    """(B, S) tokenizer-style mask, True = real token."""
    return torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]


def bad_split(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A real bug: head h gets the strided channels h, h + H, h + 2H, ..."""
    b, t, c = x.shape
    # (B, T, C) -> (B, T, D, H) -> (B, H, T, D)
    return x.view(b, t, c // n_heads, n_heads).permute(0, 3, 1, 2)


def bad_merge(x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``bad_split``: the pair round-trips yet mixes up the heads."""
    b, h, t, d = x.shape
    # (B, H, T, D) -> (B, T, D, H) -> (B, T, C)
    return x.permute(0, 2, 3, 1).reshape(b, t, d * h)


# ----------------------------------------------------------- split / merge
@pytest.mark.parametrize("shape,n_heads", [((2, 5, 12), 3), ((1, 1, 8), 8), ((3, 4, 16), 1)])
def test_split_merge_are_inverses(shape, n_heads):
    x = torch.randn(shape)
    heads = split_heads(x, n_heads)
    b, t, c = shape
    assert heads.shape == (b, n_heads, t, c // n_heads)
    assert torch.equal(merge_heads(heads), x)
    y = torch.randn(b, n_heads, t, c // n_heads)
    assert torch.equal(split_heads(merge_heads(y), n_heads), y)


def test_head_h_owns_consecutive_channels():
    x = torch.randn(B, T, C)
    heads = split_heads(x, H)
    for h in range(H):
        assert torch.equal(heads[:, h], x[..., h * D : (h + 1) * D])


def test_known_bad_split_is_caught():
    # Shows these tests can fail: view(B, T, D, H) is not what merge_heads inverts,
    # and its heads are not consecutive channels.
    x = torch.randn(B, T, C)
    assert not torch.equal(merge_heads(bad_split(x, H)), x)
    assert not torch.equal(bad_split(x, H)[:, 0], x[..., :D])
    assert torch.equal(bad_merge(bad_split(x, H)), x)  # it round-trips with its own merge ...


def test_split_heads_errors_name_the_values():
    with pytest.raises(ValueError, match=r"C=10.*H=3"):
        split_heads(torch.randn(1, 2, 10), 3)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        split_heads(torch.randn(2, 10), 2)
    with pytest.raises(ValueError, match="n_heads"):
        split_heads(torch.randn(1, 2, 10), 0)
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        merge_heads(torch.randn(2, 3, 4))


# --------------------------------------------------- parity with PyTorch
MASKS = ["none", "causal", "key_padding", "causal+key_padding"]


def masks_for(kind: str, t: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(our attn_mask broadcastable to (B, H, T, S), torch attn_mask, torch key_padding_mask)."""
    ours, torch_attn, torch_kpm = None, None, None
    if "causal" in kind:
        allowed = causal(t, t)  # (T, S)
        ours, torch_attn = allowed, ~allowed
    if "key_padding" in kind:
        real = right_padding([t, t - 2], t)  # (B, S), True = real token
        torch_kpm = ~real
        pad = real[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
        ours = pad if ours is None else ours & pad
    return ours, torch_attn, torch_kpm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", MASKS)
def test_matches_torch_multihead_attention(kind, dtype):
    ref = make_torch_mha(dtype=dtype)
    ours = MultiHeadAttention.from_torch(ref)
    x = torch.randn(B, T, C, dtype=dtype)
    x_before = x.clone()
    attn_mask, torch_attn, torch_kpm = masks_for(kind, T)
    with torch.no_grad():
        out, weights = ours(x, attn_mask=attn_mask)
        ref_out, ref_avg = ref(x, x, x, attn_mask=torch_attn, key_padding_mask=torch_kpm,
                               need_weights=True, average_attn_weights=True)
        _, ref_heads = ref(x, x, x, attn_mask=torch_attn, key_padding_mask=torch_kpm,
                           need_weights=True, average_attn_weights=False)
        unmasked, _ = ours(x)
    assert torch.equal(x, x_before), "forward modified its input"
    assert out.shape == (B, T, C)
    assert weights.shape == (B, H, T, T)
    assert ref_avg.shape == (B, T, T)
    assert weights.mean(dim=1).shape == ref_avg.shape
    diff = (out - ref_out).abs().max().item()
    wdiff = (weights.mean(dim=1) - ref_avg).abs().max().item()
    hdiff = (weights - ref_heads).abs().max().item()
    print(f"\n[{kind}, {dtype}] max|out diff|={diff:.3g} max|avg weight diff|={wdiff:.3g} "
          f"max|head weight diff|={hdiff:.3g}")
    if attn_mask is not None:  # the mask must matter, or the comparison proves nothing
        assert (out - unmasked).abs().max() > 1e-3
    tol = ATOL[dtype]
    torch.testing.assert_close(out, ref_out, atol=tol, rtol=0)
    torch.testing.assert_close(weights.mean(dim=1), ref_avg, atol=tol, rtol=0)
    torch.testing.assert_close(weights, ref_heads, atol=tol, rtol=0)


def test_matches_torch_without_bias():
    ref = make_torch_mha(bias=False)
    ours = MultiHeadAttention.from_torch(ref)
    assert ours.q_proj.bias is None and ours.o_proj.bias is None
    x = torch.randn(B, T, C)
    with torch.no_grad():
        out, _ = ours(x, attn_mask=causal(T, T))
        ref_out, _ = ref(x, x, x, attn_mask=~causal(T, T))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)


def test_load_torch_weights_copies_and_does_not_alias():
    ref = make_torch_mha()
    ours = MultiHeadAttention(AttentionConfig(C, H)).load_torch_weights(ref)
    assert torch.equal(ours.k_proj.weight, ref.in_proj_weight[C : 2 * C])
    before = ref.in_proj_weight.detach().clone()
    with torch.no_grad():
        ours.q_proj.weight.add_(1.0)
    assert torch.equal(ref.in_proj_weight, before)


# --------------------------------------------------------------- mutants
class BadSplitMHA(MultiHeadAttention):
    """view(B, T, D, H) split with its own inverse merge: round-trips, wrong heads."""

    def split(self, q, k, v):
        return bad_split(q, H), bad_split(k, H), bad_split(v, H)

    def merge(self, out):
        return bad_merge(out)


class NoTransposeMHA(MultiHeadAttention):
    """(B, T, C) viewed straight as (B, H, T, D): heads mix positions."""

    def split(self, q, k, v):
        return tuple(t.reshape(t.shape[0], H, t.shape[1], D) for t in (q, k, v))

    def merge(self, out):
        return out.reshape(out.shape[0], out.shape[2], C)


class ModelWidthScaleMHA(MultiHeadAttention):
    """Scales by 1 / sqrt(C) instead of 1 / sqrt(D)."""

    def attend(self, q, k, v, attn_mask):
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1 / math.sqrt(C))


class NoOutputProjectionMHA(MultiHeadAttention):
    def output(self, x):
        return x


@pytest.mark.parametrize("mutant", [BadSplitMHA, NoTransposeMHA, ModelWidthScaleMHA, NoOutputProjectionMHA])
def test_parity_check_catches_known_bugs(mutant):
    ref = make_torch_mha()
    bad = mutant.from_torch(ref)
    x = torch.randn(B, T, C)
    with torch.no_grad():
        out, _ = bad(x, attn_mask=causal(T, T))
        ref_out, _ = ref(x, x, x, attn_mask=~causal(T, T))
    diff = (out - ref_out).abs().max().item()
    print(f"\n[{mutant.__name__}] max|out diff| vs torch = {diff:.3g}")
    assert diff > 1e-3


def test_scale_is_one_over_sqrt_head_dim():
    config = AttentionConfig(C, H)
    assert config.head_dim == D
    assert config.scale == pytest.approx(1 / math.sqrt(D))
    torch.manual_seed(1)
    mha = MultiHeadAttention(config)
    x = torch.randn(B, T, C)
    with torch.no_grad():
        out, _ = mha(x)
        q, k, v = mha.split(*mha.project(x))  # each (B, H, T, D)

        def manual(scale: float) -> torch.Tensor:
            heads = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v  # (B, H, T, D)
            return mha.o_proj(heads.transpose(1, 2).reshape(B, T, C))  # (B, H, T, D) -> (B, T, C)

        torch.testing.assert_close(out, manual(1 / math.sqrt(D)), atol=1e-5, rtol=0)
        assert (out - manual(1 / math.sqrt(C))).abs().max() > 1e-3


# ------------------------------------------------------------------ hooks
def test_cache_hook_incremental_equals_full():
    torch.manual_seed(2)
    mha = MultiHeadAttention(AttentionConfig(C, H)).eval()
    x = torch.randn(B, T, C)
    cache = KVCache(batch_size=B, n_kv_heads=H, capacity=T, head_dim=D)  # refuses any other shape
    with torch.no_grad():
        full, _ = mha(x, attn_mask=causal(T, T))
        parts = [mha(x[:, :3], attn_mask=causal(3, 3), cache=cache)[0]]  # prefill
        parts.append(mha(x[:, 3:5], attn_mask=causal(2, 5), cache=cache)[0])  # chunk, T != S
        out, weights = mha(x[:, 5:], cache=cache)  # one token: all keys allowed
        parts.append(out)
    assert weights.shape == (B, H, 1, T)
    assert cache.length == T
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_position_hook_is_identity_and_runs_before_the_cache():
    mha = MultiHeadAttention(AttentionConfig(C, H))
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    q2, k2 = mha.position(q, k, torch.arange(T))
    assert q2 is q and k2 is k

    class Shifted(MultiHeadAttention):
        def position(self, q, k, position_ids):
            self.got = (tuple(q.shape), tuple(k.shape), position_ids)
            return q, k + position_ids[:, None, :, None]  # (B, T) -> (B, 1, T, 1)

    shifted = Shifted(AttentionConfig(C, H))
    cache = KVCache(batch_size=B, n_kv_heads=H, capacity=T, head_dim=D)
    ids = torch.arange(T).expand(B, T)
    x = torch.randn(B, T, C)
    with torch.no_grad():
        shifted(x, position_ids=ids, cache=cache)
        _, plain_k, _ = shifted.split(*shifted.project(x))
    assert shifted.got[:2] == ((B, H, T, D), (B, H, T, D)) and shifted.got[2] is ids
    torch.testing.assert_close(cache.k[:, :, :T], plain_k + ids[:, None, :, None])


# ----------------------------------------------------------------- errors
def test_config_validation_errors():
    with pytest.raises(ValueError, match=r"C=10.*H=4"):
        AttentionConfig(10, 4)
    with pytest.raises(ValueError, match="d_model"):
        AttentionConfig(0, 1)
    with pytest.raises(ValueError, match="n_heads"):
        AttentionConfig(8, True)
    cfg = AttentionConfig(12, 3)
    assert cfg.n_kv_heads == 3 and cfg.group_size == 1 and cfg.head_dim == 4
    with pytest.raises(ValueError, match=r"Hkv=1.*H=4.*GroupedQueryAttention"):
        MultiHeadAttention(AttentionConfig(C, H, n_kv_heads=1))


def test_forward_errors():
    mha = MultiHeadAttention(AttentionConfig(C, H))
    with pytest.raises(ValueError, match=rf"C={C}.*\(2, 3, 16\)"):
        mha(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="broadcast"):
        mha(torch.randn(2, 3, C), attn_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        mha(torch.randn(2, 3, C), attn_mask=torch.ones(3, 3))


def test_load_errors_name_the_shapes():
    mha = MultiHeadAttention(AttentionConfig(C, H))
    with pytest.raises(ValueError, match=r"\(192, 64\).*\(96, 32\)"):
        mha.load_torch_weights(nn.MultiheadAttention(64, H, batch_first=True))
    with pytest.raises(ValueError, match="bias"):
        mha.load_torch_weights(nn.MultiheadAttention(C, H, bias=False, batch_first=True))
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(C, H, kdim=16, batch_first=True))
    with pytest.raises(ValueError, match="add_bias_kv"):
        mha.load_torch_weights(nn.MultiheadAttention(C, H, add_bias_kv=True, batch_first=True))
    with pytest.raises(ValueError, match="MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(C, C))
