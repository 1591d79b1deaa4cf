"""attnlab.attention against PyTorch's own softmax and scaled_dot_product_attention."""

from itertools import product

import pytest
import torch
import torch.nn.functional as F

from attnlab import scaled_dot_product_attention, stable_softmax
from attnlab.attention import broadcasts_to
from attnlab.diagnose import attention_mistakes, explain_attention_mismatch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_case(g, lead, T, S, D, Dv, dtype=torch.float32, device="cpu"):
    q = torch.randn(*lead, T, D, generator=g, dtype=torch.float64).to(device, dtype)
    k = torch.randn(*lead, S, D, generator=g, dtype=torch.float64).to(device, dtype)
    v = torch.randn(*lead, S, Dv, generator=g, dtype=torch.float64).to(device, dtype)
    return q, k, v


# --------------------------------------------------------------- stable_softmax
@pytest.mark.parametrize("shape,dim", [((7,), 0), ((4, 9), -1), ((4, 9), 0), ((2, 3, 5), 1), ((2, 3, 4, 5), -2)])
def test_softmax_matches_torch(shape, dim):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 4
    torch.testing.assert_close(stable_softmax(x, dim=dim), torch.softmax(x, dim=dim), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype,big", [(torch.float32, 1000.0), (torch.float16, 12.0), (torch.bfloat16, 1000.0)])
def test_softmax_does_not_overflow(dtype, big):
    x = torch.tensor([big, big - 1, big - 2], dtype=dtype)
    naive = torch.exp(x) / torch.exp(x).sum()
    assert torch.isnan(naive).any(), "the naive formula should overflow here, or the test proves nothing"
    out = stable_softmax(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), torch.softmax(x.float(), -1), atol=2e-2 if dtype != torch.float32 else 1e-6, rtol=0)


def test_softmax_all_minus_inf_row_is_zero_not_nan():
    x = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3])
    out = stable_softmax(x)
    assert torch.equal(out[1], torch.zeros(3))
    torch.testing.assert_close(out[0], torch.softmax(x[0], -1))


def test_softmax_refuses_integers():
    with pytest.raises(ValueError, match="int64"):
        stable_softmax(torch.arange(3))


# --------------------------------------------------- scaled_dot_product_attention
def random_shape(seed):
    """Leading dims (0 to 2 of them), T, S, D, Dv for one random case."""
    g = torch.Generator().manual_seed(seed)
    lead = tuple(int(n) for n in torch.randint(1, 4, (seed % 3,), generator=g))
    T, S, D, Dv = (int(n) for n in torch.randint(1, 33, (4,), generator=g))
    return g, lead, T, S, D, Dv


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(12))
def test_attention_matches_pytorch_on_random_shapes(seed, device):
    g, lead, T, S, D, Dv = random_shape(seed)
    q, k, v = random_case(g, lead, T, S, D, Dv, device=device)
    out, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-4)
    assert weights.shape == (*lead, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(*lead, T, device=device))


def test_random_shapes_cover_t_not_equal_s_and_several_leading_dims():
    """Otherwise the random cases above would not test what they claim to."""
    shapes = [random_shape(seed)[1:] for seed in range(12)]
    assert any(T != S for _, T, S, _, _ in shapes)
    assert {len(lead) for lead, *_ in shapes} == {0, 1, 2}


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 1, 5, 7), (2, 3, 5, 7), (1, 1, 1, 7), (3, 1, 7)])
def test_attention_with_masks_matches_pytorch(mask_shape):
    g = torch.Generator().manual_seed(1)
    q, k, v = random_case(g, (2, 3), 5, 7, 8, 4)
    mask = torch.rand(mask_shape, generator=g) < 0.5
    mask[..., 0] = True
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)
    assert (weights[~mask.expand(2, 3, 5, 7)] == 0).all()


def test_attention_float64_is_exact_to_rounding():
    g = torch.Generator().manual_seed(2)
    q, k, v = random_case(g, (3,), 6, 11, 16, 5, dtype=torch.float64)
    out, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-12, rtol=1e-12)


def test_custom_scale_matches_pytorch():
    g = torch.Generator().manual_seed(3)
    q, k, v = random_case(g, (2,), 4, 6, 8, 8)
    out, _ = scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-6, rtol=1e-5)


def test_gradients_match_pytorch():
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(5, 9, generator=g) < 0.6
    mask[:, 0] = True
    grads = []
    for fn in (lambda q, k, v: scaled_dot_product_attention(q, k, v, mask)[0],
               lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)):
        q, k, v = (t.requires_grad_() for t in random_case(torch.Generator().manual_seed(5), (2,), 5, 9, 8, 3))
        (fn(q, k, v) ** 2).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_large_logits_do_not_overflow():
    g = torch.Generator().manual_seed(6)
    q, k, v = random_case(g, (2,), 4, 6, 16, 3)
    q, k = q * 40, k * 40
    out, weights = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fully_masked_query_gives_zeros_not_nan(dtype):
    g = torch.Generator().manual_seed(7)
    q, k, v = random_case(g, (1,), 3, 4, 8, 2, dtype=dtype)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    assert torch.equal(out[0, 1], torch.zeros(2, dtype=dtype))


def test_inputs_are_not_modified():
    g = torch.Generator().manual_seed(8)
    q, k, v = random_case(g, (2,), 4, 5, 8, 3)
    mask = torch.rand(4, 5, generator=g) < 0.5
    copies = [t.clone() for t in (q, k, v, mask)]
    scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for original, copy in zip((q, k, v, mask), copies):
        assert torch.equal(original, copy)


@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,message",
    [
        ((2, 5, 8), (2, 7, 4), (2, 7, 8), r"same last dim D.*\(2, 5, 8\).*\(2, 7, 4\)"),
        ((2, 5, 8), (2, 7, 8), (2, 6, 8), r"same number of positions S.*\(2, 6, 8\)"),
        ((2, 5, 8), (3, 7, 8), (3, 7, 8), r"leading.*\(2, 5, 8\).*\(3, 7, 8\)"),
        ((8,), (7, 8), (7, 8), r"at least 2 dims.*\(8,\)"),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(q_shape, k_shape, v_shape, message):
    with pytest.raises(ValueError, match=message):
        scaled_dot_product_attention(torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape))


def test_bad_masks_and_dtypes_raise_value_error():
    q, k, v = torch.randn(5, 8), torch.randn(7, 8), torch.randn(7, 8)
    with pytest.raises(ValueError, match=r"\(7, 5\).*\(5, 7\)"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 7))
    with pytest.raises(ValueError, match="floating point.*int64"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="share a dtype"):
        scaled_dot_product_attention(q.double(), k, v)


# ------------------------------------------------------------------- diagnose
def test_every_classic_mistake_is_recognised_by_name():
    g = torch.Generator().manual_seed(9)
    q, k, v = random_case(g, (2,), 5, 7, 16, 4)
    mask = torch.rand(5, 7, generator=g) < 0.5
    mask[:, 0] = True
    mistakes = list(attention_mistakes(q, k, v, mask))
    assert len(mistakes) >= 7
    for description, wrong_output in mistakes:
        assert description in explain_attention_mismatch(wrong_output, q, k, v, mask)
    right, _ = scaled_dot_product_attention(q, k, v, mask)
    assert "differs from" in explain_attention_mismatch(right + 1, q, k, v, mask)
    assert "shape" in explain_attention_mismatch(right[..., :2], q, k, v, mask)
    assert "NaN" in explain_attention_mismatch(right * float("nan"), q, k, v, mask)


def test_scale_by_d_is_not_confused_with_no_scale():
    g = torch.Generator().manual_seed(10)
    q, k, v = random_case(g, (1,), 4, 6, 64, 3)
    by_d = torch.softmax(q @ k.transpose(-2, -1) / 64, -1) @ v
    assert "by D instead of sqrt(D)" in explain_attention_mismatch(by_d, q, k, v)
    unscaled = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
    assert "did not scale" in explain_attention_mismatch(unscaled, q, k, v)


def test_broadcasts_to_agrees_with_torch_broadcast_shapes():
    """The per-call mask check's plain-Python broadcast rule against PyTorch's own."""
    shapes = [()] + [s for n in (1, 2, 3) for s in product((1, 2, 3), repeat=n)]
    for shape, target in product(shapes, shapes):
        try:
            want = torch.broadcast_shapes(shape, target) == torch.Size(target)
        except RuntimeError:
            want = False
        assert broadcasts_to(shape, target) == want, (shape, target)
