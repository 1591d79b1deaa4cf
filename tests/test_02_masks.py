"""Chapter 2: causal masks.

Every expected value here comes from something not written in ``attnlab``:
``torch.tril`` with an explicit diagonal, PyTorch's own
``scaled_dot_product_attention`` (with ``is_causal=True`` or an explicit boolean
mask), or recomputing the full sequence.
"""

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import scaled_dot_product_attention
from attnlab.masks import additive_mask, causal_mask, min_value

SIZES = [(T, S) for S in range(1, 9) for T in range(1, S + 1)]


def tril_reference(T: int, S: int) -> torch.Tensor:
    """Offset-aware causal mask built independently of attnlab: (T, S), True = may attend."""
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)


def random_qkv(B: int, H: int, T: int, S: int, D: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=gen, dtype=dtype)
    k = torch.randn(B, H, S, D, generator=gen, dtype=dtype)
    v = torch.randn(B, H, S, D, generator=gen, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize(("T", "S"), SIZES)
def test_causal_mask_equals_tril_with_offset(T, S):
    mask = causal_mask(T, S)
    assert mask.dtype == torch.bool
    assert mask.shape == (T, S)
    assert torch.equal(mask, tril_reference(T, S))


def test_causal_mask_defaults_to_square_lower_triangle():
    for T in range(1, 9):
        assert torch.equal(causal_mask(T), torch.tril(torch.ones(T, T, dtype=torch.bool)))


def test_causal_mask_is_the_last_rows_of_the_full_mask():
    # With a cache of S - T positions, the new queries are the last T rows of the S x S mask.
    for T, S in SIZES:
        assert torch.equal(causal_mask(T, S), causal_mask(S)[S - T :])


def test_causal_mask_last_query_sees_everything_first_key_always_visible():
    for T, S in SIZES:
        mask = causal_mask(T, S)
        assert mask[-1].all(), "the newest query must see every key"
        assert mask[:, 0].all(), "every query must see the first key"
        assert mask.sum().item() == sum(S - T + i + 1 for i in range(T))


def test_causal_mask_is_built_on_the_requested_device():
    # The meta device needs no hardware, yet shows that no tensor is made on the CPU and moved.
    mask = causal_mask(3, 5, device="meta")
    assert mask.device.type == "meta"
    assert mask.shape == (3, 5)
    assert causal_mask(3, 5, device=torch.device("cpu")).device.type == "cpu"


def test_square_causal_mask_matches_pytorch_is_causal():
    q, k, v = random_qkv(2, 3, 6, 6, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # Weights above the diagonal are exactly zero; rows sum to one.
    assert torch.all(weights.masked_select(~tril_reference(6, 6)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 6))


@pytest.mark.parametrize(("T", "S"), [(1, 5), (2, 5), (3, 7), (4, 4), (5, 9)])
def test_causal_attention_matches_pytorch_with_the_same_bool_mask(T, S):
    q, k, v = random_qkv(2, 3, T, S, 8, seed=T * 10 + S)
    mask = causal_mask(T, S)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=tril_reference(T, S))
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("T", "S"), [(1, 5), (2, 5), (3, 7)])
def test_top_left_is_causal_differs_when_t_differs_from_s(T, S):
    """PyTorch's ``is_causal=True`` is top-left aligned: wrong for a cache, where T < S."""
    q, k, v = random_qkv(1, 2, T, S, 8, seed=1)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # is_causal=True behaves exactly like tril() with diagonal 0 on the (T, S) scores ...
    top_left_mask = torch.ones(T, S, dtype=torch.bool).tril()
    torch.testing.assert_close(top_left, F.scaled_dot_product_attention(q, k, v, attn_mask=top_left_mask))
    # ... which is not the offset-aware mask, and gives different outputs.
    assert not torch.equal(causal_mask(T, S), top_left_mask)
    ours, _ = scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S))
    assert not torch.allclose(ours, top_left, atol=1e-3)


def test_offset_aware_mask_reproduces_the_full_computation():
    """Attending with the last T queries only gives the last T rows of the full causal run."""
    B, H, S, D = 2, 2, 7, 8
    gen = torch.Generator().manual_seed(3)
    q_all = torch.randn(B, H, S, D, generator=gen)
    k = torch.randn(B, H, S, D, generator=gen)
    v = torch.randn(B, H, S, D, generator=gen)
    full = F.scaled_dot_product_attention(q_all, k, v, is_causal=True)  # (B, H, S, D), T == S
    for T in range(1, S + 1):
        out, _ = scaled_dot_product_attention(q_all[:, :, S - T :], k, v, attn_mask=causal_mask(T, S))
        torch.testing.assert_close(out, full[:, :, S - T :], atol=1e-5, rtol=1e-5)


def _tiny_attention(x: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Random projections of ``x`` (B, S, C) into 2 heads, then the package's attention."""
    B, S, C = x.shape
    H, D = 2, C // 2
    gen = torch.Generator().manual_seed(seed)
    w_q, w_k, w_v = (torch.randn(C, C, generator=gen) / C**0.5 for _ in range(3))

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, S, H, D).transpose(1, 2)  # (B, S, C) -> (B, S, H, D) -> (B, H, S, D)

    out, _ = scaled_dot_product_attention(split(x @ w_q), split(x @ w_k), split(x @ w_v), attn_mask=mask)
    return out.transpose(1, 2).reshape(B, S, C)  # (B, H, S, D) -> (B, S, H, D) -> (B, S, C)


def _leaks(mask: torch.Tensor, S: int = 6, C: int = 8) -> bool:
    """True if changing some token j changes an output at a position < j under ``mask``."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, S, C, generator=gen)
    base = _tiny_attention(x, mask)
    for j in range(S):
        changed = x.clone()
        changed[:, j] = torch.randn(2, C, generator=gen) * 3
        after = _tiny_attention(changed, mask)
        if not torch.allclose(after[:, :j], base[:, :j], atol=1e-6, rtol=0):
            return True
        # The test is sensitive: position j itself does react to the change.
        assert not torch.allclose(after[:, j], base[:, j], atol=1e-3)
    return False


def test_causality_changing_a_token_never_changes_earlier_outputs():
    assert not _leaks(causal_mask(6))


def test_causality_check_catches_wrong_masks():
    # The same property check fails for the classic mistakes, so it can grade them.
    ones = torch.ones(6, 6, dtype=torch.bool)
    assert _leaks(ones.tril(diagonal=1)), "an off-by-one diagonal lets position j-1 see j"
    assert _leaks(ones.triu()), "triu where tril was meant looks into the future"
    assert _leaks(ones), "no mask at all"


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((5, 3), r"T=5, S=3"),
        ((0,), r"T=0"),
        ((-2, 4), r"T=-2"),
        ((2, 0), r"S=0"),
        ((2.0, 4), r"T=2\.0.*float"),
        ((2, 4.5), r"S=4\.5.*float"),
        ((True, 4), r"T=True.*bool"),
        ((torch.tensor(3), 4), r"T=tensor\(3\).*Tensor"),
    ],
)
def test_causal_mask_rejects_bad_sizes(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        causal_mask(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_min_value_is_the_most_negative_finite_number(dtype):
    value = min_value(dtype)
    assert value == torch.finfo(dtype).min
    assert torch.isfinite(torch.tensor(value, dtype=dtype))
    assert torch.isinf(torch.tensor(value, dtype=dtype) * 2)


def test_minus_1e9_does_not_fit_in_float16():
    # The constant many tutorials use: it overflows to -inf in float16, or masked_fill refuses it.
    assert torch.isinf(torch.tensor(-1e9, dtype=torch.float16))
    with pytest.raises(RuntimeError):
        torch.zeros(3, dtype=torch.float16).masked_fill(torch.tensor([True, False, False]), -1e9)
    assert torch.isfinite(torch.tensor(min_value(torch.float16), dtype=torch.float16))
    # ... and finfo.min is no cure-all: a logit of -100 pushes it over the edge in float16.
    assert torch.isinf(torch.tensor(-100.0, dtype=torch.float16) + min_value(torch.float16))


def test_additive_mask_matches_the_bool_mask_in_pytorch_sdpa():
    T, S = 3, 5
    q, k, v = random_qkv(2, 2, T, S, 8, seed=5)
    bool_mask = causal_mask(T, S)
    additive = additive_mask(bool_mask, torch.float32)
    assert additive.shape == (T, S) and additive.dtype == torch.float32
    assert torch.equal(additive == 0, bool_mask)
    assert torch.all(additive.masked_select(~bool_mask) == torch.finfo(torch.float32).min)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=tril_reference(T, S))
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=additive), expected)
    ours, _ = scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_additive_mask_keeps_fully_masked_rows_finite_where_minus_inf_gives_nan():
    scores = torch.randn(2, 4)
    empty_row = torch.tensor([[True, True, False, False], [False, False, False, False]])
    plain_inf = torch.softmax(scores.masked_fill(~empty_row, float("-inf")), dim=-1)
    assert torch.isnan(plain_inf[1]).all(), "a plain softmax over an all -inf row is NaN"
    finite = torch.softmax(scores + additive_mask(empty_row, torch.float32), dim=-1)
    assert torch.isfinite(finite).all()
    torch.testing.assert_close(finite[0], plain_inf[0])


def test_additive_mask_and_min_value_reject_bad_input():
    with pytest.raises(ValueError, match=r"torch\.int64"):
        additive_mask(torch.ones(2, 2, dtype=torch.long), torch.float32)
    with pytest.raises(ValueError, match=r"torch\.int64"):
        min_value(torch.int64)
    with pytest.raises(ValueError, match=r"list"):
        additive_mask([[True]], torch.float32)


# ----------------------------------------------- feedback that names the mistake (diagnose)


from attnlab.attention import stable_softmax  # noqa: E402
from attnlab.diagnose_causal import (  # noqa: E402
    explain_causal_attention_mismatch,
    explain_causal_mask_mismatch,
    explain_causal_weights_mismatch,
)


@pytest.mark.parametrize(
    ("build", "T", "S", "phrase"),
    [
        (lambda T, S: torch.ones(T, S, dtype=torch.bool).triu(S - T), 4, 4, "triu where tril"),
        (lambda T, S: torch.ones(T, S, dtype=torch.bool).tril(S - T + 1), 3, 5, "off by one"),
        (lambda T, S: torch.ones(T, S, dtype=torch.bool).tril(S - T - 1), 3, 5, "off by one"),
        (lambda T, S: torch.ones(T, S, dtype=torch.bool).tril(), 2, 6, "top-left"),
        (lambda T, S: torch.ones(T, S, dtype=torch.long).tril(S - T), 3, 3, "bool"),
        (lambda T, S: torch.ones(S, T, dtype=torch.bool), 2, 4, "shape"),
    ],
)
def test_explain_causal_mask_mismatch_names_the_mistake(build, T, S, phrase):
    assert phrase in explain_causal_mask_mismatch(build(T, S), T, S)


def test_explain_causal_attention_mismatch_names_the_mistake():
    q, k, v = random_qkv(2, 2, 3, 6, 8, seed=9)
    keys = torch.tensor([[True] * 6, [False, False, True, True, True, True]])[:, None, None, :]
    right = tril_reference(3, 6) & keys

    def attend(mask, after=False):
        scores = q @ k.transpose(-2, -1) / 8**0.5
        if after:
            return torch.softmax(scores, -1).masked_fill(~mask, 0) @ v
        return stable_softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v  # empty rows: zeros

    top_left = torch.ones(3, 6, dtype=torch.bool).tril() & keys
    assert "top-left" in explain_causal_attention_mismatch(attend(top_left), q, k, v, keys)
    assert "dropped the extra" in explain_causal_attention_mismatch(attend(tril_reference(3, 6)), q, k, v, keys)
    assert "after the softmax" in explain_causal_attention_mismatch(attend(right, after=True), q, k, v, keys)
    nan = torch.full((2, 2, 3, 8), float("nan"))
    assert "NaN" in explain_causal_attention_mismatch(nan, q, k, v, keys)


def _masked_attention(q, k, v, allowed, fill=float("-inf")):
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    weights = torch.softmax(scores.masked_fill(~allowed, fill), -1)
    return weights @ v, weights


def test_explain_names_uniform_rows_and_nan_rows_apart():
    """A finite mask value leaves an all-masked row uniform (no NaN): the feedback must not say NaN."""
    q, k, v = random_qkv(2, 1, 4, 4, 8, seed=3)
    keys = torch.tensor([[True] * 4, [False, True, True, True]])[:, None, None, :]
    allowed = tril_reference(4, 4) & keys
    uniform, _ = _masked_attention(q, k, v, allowed, fill=-1e9)
    message = explain_causal_attention_mismatch(uniform, q, k, v, keys)
    assert "uniform weights" in message and "NaN" not in message.split(":")[0]
    nan, _ = _masked_attention(q, k, v, allowed)
    assert torch.isnan(nan).any()
    assert "gave NaN" in explain_causal_attention_mismatch(nan, q, k, v, keys)


def test_explain_lists_every_mistake_that_gives_the_same_output():
    # T=2, S=5: the off-by-one mask tril(4) lets every query see every key, as no mask at all does
    q, k, v = random_qkv(1, 1, 2, 5, 8, seed=4)
    no_mask, _ = _masked_attention(q, k, v, torch.ones(2, 5, dtype=torch.bool))
    message = explain_causal_attention_mismatch(no_mask, q, k, v)
    assert "one of these" in message and "no effect" in message and "off by one" in message
    # T=3, S=6 tells them apart
    q, k, v = random_qkv(1, 1, 3, 6, 8, seed=4)
    no_mask, _ = _masked_attention(q, k, v, torch.ones(3, 6, dtype=torch.bool))
    message = explain_causal_attention_mismatch(no_mask, q, k, v)
    assert "no effect" in message and "off by one" not in message


def test_explain_does_not_blame_a_dtype_where_only_values_are_checked():
    q, k, v = random_qkv(1, 2, 3, 5, 8, seed=5)
    out, _ = _masked_attention(q.double(), k.double(), v.double(), torch.ones(3, 5, dtype=torch.bool))
    assert "dtype" in explain_causal_attention_mismatch(out, q, k, v)
    message = explain_causal_attention_mismatch(out, q, k, v, exact_dtype=False)
    assert "dtype" not in message and "no effect" in message


def test_explain_causal_weights_mismatch():
    q, k, v = random_qkv(1, 2, 3, 5, 8, seed=6)
    out, weights = _masked_attention(q, k, v, tril_reference(3, 5))
    assert explain_causal_weights_mismatch(weights, out, q, k, v) is None
    _, unmasked = _masked_attention(q, k, v, torch.ones(3, 5, dtype=torch.bool))
    assert "forbidden keys must be 0" in explain_causal_weights_mismatch(unmasked, out, q, k, v)
    after = unmasked.masked_fill(~tril_reference(3, 5), 0.0)
    assert "sum to 1" in explain_causal_weights_mismatch(after, out, q, k, v)
    assert "dtype" in explain_causal_weights_mismatch(weights.half(), out, q, k, v)
    assert "shape" in explain_causal_weights_mismatch(weights[0], out, q, k, v)


# ----------------------------------------------- the attention functions grading.py feeds leaks_future


def test_the_graders_leaky_attentions_are_what_their_labels_say():
    """grading.py labels every attention it gives the learner's leaks_future "leaks: ..." or "no leak: ..."
    from leak_truth, a table written from the definitions; the reference checker must agree, for any draw."""
    import nbformat

    from attnlab_grader.authority import load_spec, reference_namespace
    from course import SOLUTIONS

    folder = SOLUTIONS / "02-causal-masking"
    spec = load_spec(folder / "grading.py")
    reference = reference_namespace(nbformat.read(folder / "causal.ipynb", as_version=4))
    checked = set()
    for seed in range(3):
        for part in spec.parts(torch.Generator().manual_seed(seed)):
            for case in part.cases:
                if case.driver is not spec.drive_leaks:
                    continue
                for label, said in case.driver(reference, case.inputs).items():
                    assert said is label.startswith("leaks:"), (case.label, label)
                    checked.add(case.inputs["attends"][label])
    assert checked == set(spec.DESCRIPTIONS), f"never tried: {set(spec.DESCRIPTIONS) - checked}"
