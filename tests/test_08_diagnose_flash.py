"""Chapter 8: the graders' diagnosis of the classic mistakes (attnlab.diagnose_flash).

The replays with no mistake must agree with PyTorch, every replayed mistake must
really change the result on the inputs it is named for (or the feedback could
blame a harmless variant), and the explanations must name the mistake that
produced a wrong answer and call a right answer right.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlab
from attnlab.diagnose_flash import (
    MERGE_MISTAKES,
    STATS_MISTAKES,
    TILED_MISTAKES,
    explain_merge_mismatch,
    explain_online_softmax_mismatch,
    explain_stats_mismatch,
    explain_tiled_mismatch,
    library_attention_forbidden,
    merge_with_mistake,
    stats_with_mistake,
    tiled_with_mistake,
)
from attnlab.flash import online_softmax, online_softmax_stats, tiled_attention


def case(seed=0, B=2, T=7, S=11, D=4):
    """T != S, block sizes that divide neither, a left-padding mask with a fully masked first block."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, n, D, generator=gen, dtype=torch.float64) for n in (T, S, S))
    k = k * 3  # the running maximum changes between blocks
    keys = torch.ones(B, 1, S, dtype=torch.bool)
    keys[-1, :, :5] = False  # (B, 1, S): row B-1's first five keys are pads
    return q, k, v, keys


def test_replays_without_mistake_agree_with_pytorch():
    q, k, v, keys = case()
    T, S = q.shape[-2], k.shape[-2]
    allowed = keys & torch.ones(T, S, dtype=torch.bool).tril(S - T)
    out, lse = tiled_with_mistake(q, k, v, 3, 4, is_causal=True, attn_mask=keys)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), rtol=0, atol=1e-12)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(4)).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(lse, scores.logsumexp(-1), rtol=0, atol=1e-12)
    m, l = stats_with_mistake(list(scores.split(3, dim=-1)))
    torch.testing.assert_close(m, scores.amax(-1, keepdim=True))
    finite_m = m.clamp_min(torch.finfo(m.dtype).min)  # a fully masked row: m = -inf, l = 0
    torch.testing.assert_close(l, torch.exp(scores - finite_m).sum(-1, keepdim=True))
    parts = [tiled_attention(q, k[:, a:b], v[:, a:b]) for a, b in [(0, 4), (4, 5), (5, 11)]]
    merged, merged_lse = merge_with_mistake([p[0] for p in parts], [p[1] for p in parts])
    torch.testing.assert_close(merged, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mistake", [*TILED_MISTAKES, "nan_from_empty_block", "nan_in_empty_rows"])
def test_every_tiled_mistake_changes_the_result_and_is_named(mistake):
    q, k, v, keys = case()
    is_causal = mistake not in ("mask_ignored", "mask_inverted")
    mask = keys if mistake != "ragged_q" else None
    right, _ = tiled_with_mistake(q, k, v, 3, 4, is_causal, mask)
    wrong, wrong_lse = tiled_with_mistake(q, k, v, 3, 4, is_causal, mask, mistake)
    assert not torch.allclose(wrong, right, equal_nan=True), f"{mistake} changes nothing here"
    got = (wrong.float(), wrong_lse.float())
    message = explain_tiled_mismatch(got, q.float(), k.float(), v.float(), 3, 4, is_causal, mask)
    if mistake == "nan_from_empty_block":
        assert "-inf - -inf = NaN" in message
    elif mistake == "nan_in_empty_rows":
        assert "NaN in fully masked rows" in message
    else:
        assert TILED_MISTAKES[mistake] in message, message


def test_a_right_answer_is_called_right_and_a_wrong_lse_is_named():
    q, k, v, keys = case(seed=1)
    q, k, v = q.float(), k.float(), v.float()
    got = tiled_attention(q, k, v, attn_mask=keys, is_causal=True, block_q=3, block_k=4)
    assert "are right" in explain_tiled_mismatch(got, q, k, v, 3, 4, True, keys)
    message = explain_tiled_mismatch((got[0], got[1] - 1), q, k, v, 3, 4, True, keys)
    assert "the output is right but lse is not" in message
    message = explain_tiled_mismatch((got[0].double(), got[1]), q, k, v, 3, 4, True, keys)
    assert "inputs' dtype torch.float32" in message
    message = explain_tiled_mismatch(got[0], q, k, v, 3, 4, True, keys)
    assert "must return a tuple (output, lse)" in message


@pytest.mark.parametrize("mistake", list(STATS_MISTAKES))
def test_every_stats_mistake_is_named(mistake):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, generator=gen) * 3 + 100  # exp(100) overflows float32: the no-shift mistake shows
    x[:, 4] = 110.0  # the maximum grows in the second block
    blocks = list(x.split(3, dim=-1))
    m, l = stats_with_mistake(blocks, mistake)
    right = stats_with_mistake(blocks)
    assert not (torch.allclose(m, right[0]) and torch.allclose(l, right[1])), f"{mistake} changes nothing"
    message = explain_stats_mismatch((m.float(), l.float()), blocks)
    assert STATS_MISTAKES[mistake] in message, message
    assert "are right" in explain_stats_mismatch(online_softmax_stats(blocks), blocks)


def test_online_softmax_explanations():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, generator=gen) * 5
    assert "is right" in explain_online_softmax_mismatch(online_softmax(x, 4), x, 4)
    per_block = torch.cat([torch.softmax(b, -1) for b in x.split(4, dim=-1)], dim=-1)
    assert "normalised each block on its own" in explain_online_softmax_mismatch(per_block, x, 4)
    empty = torch.full((1, 4), float("-inf"))
    assert "rows that are all -inf" in explain_online_softmax_mismatch(torch.full((1, 4), float("nan")), empty, 2)


@pytest.mark.parametrize("mistake", [*MERGE_MISTAKES, "no_max", "nan_all_empty"])
def test_every_merge_mistake_is_named(mistake):
    gen = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(2, 3, 8, generator=gen), torch.randn(2, 12, 8, generator=gen), torch.randn(2, 12, 5, generator=gen)
    k = k * 60 if mistake == "no_max" else k  # lse in the hundreds: exp(lse) overflows float32
    keys = torch.ones(2, 1, 12, dtype=torch.bool)
    keys[1, :, :] = False  # batch row 1: every chunk is empty
    parts = [tiled_attention(q, k[:, a:b], v[:, a:b], attn_mask=keys[..., a:b]) for a, b in [(0, 5), (5, 12)]]
    outputs, lses = [p[0] for p in parts], [p[1] for p in parts]
    if mistake == "no_max":
        assert torch.stack(lses)[:, 0].max() > 89, "lse must overflow exp() in float32 for the no-max mistake"
    got = merge_with_mistake(outputs, lses, mistake)
    right = merge_with_mistake(outputs, lses)
    assert not (torch.allclose(got[0], right[0], equal_nan=True) and torch.allclose(got[1], right[1])), mistake
    message = explain_merge_mismatch(got, outputs, lses)
    expected = {"no_max": "without their maxima", "nan_all_empty": "every partial is empty"}.get(
        mistake, MERGE_MISTAKES.get(mistake))
    assert expected in message, message
    assert "merge is right" in explain_merge_mismatch(right, outputs, lses)


def test_library_attention_forbidden_catches_aliases_and_restores_everything():
    x = torch.randn(2, 5)
    alias = attnlab.tiled_attention
    with library_attention_forbidden():
        for call in (lambda: torch.softmax(x, -1), lambda: x.softmax(-1), lambda: F.softmax(x, -1),
                     lambda: torch.nn.Softmax(dim=-1)(x), lambda: torch.special.softmax(x, -1),
                     lambda: F.scaled_dot_product_attention(x, x, x), lambda: alias(x, x, x),
                     lambda: attnlab.merge_partials([x], [x[:, 0]])):
            with pytest.raises(AssertionError, match="your answer calls"):
                call()
        assert torch.exp(x).sum() > 0  # everything else still works
    torch.testing.assert_close(x.softmax(-1), torch.softmax(x, -1))
    torch.testing.assert_close(F.softmax(x, -1), torch.special.softmax(x, -1))
    assert alias(x[None], x[None], x[None])[0].shape == (1, 2, 5)
    assert "softmax" not in torch.Tensor.__dict__, "the inherited Tensor.softmax must come back, not a copy"


def test_nan_is_blamed_on_what_can_cause_it_there():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, generator=gen)  # no -inf anywhere
    blocks = list(x.split(3, dim=-1))
    nan = torch.full((2, 1), float("nan"))
    message = explain_stats_mismatch((nan, nan), blocks)  # what keeping the streamed blocks gives
    assert "reused buffer" in message and "-inf - -inf" not in message, message
    masked = x.clone()
    masked[0] = float("-inf")
    m, l = stats_with_mistake(list(masked.split(3, dim=-1)))
    message = explain_stats_mismatch((m, l.masked_fill(torch.isinf(m), float("nan"))), list(masked.split(3, dim=-1)))
    assert "-inf - -inf = NaN" in message and "rows that do have allowed keys" not in message, message
    l_nan = torch.tensor([[1.0], [float("nan")]])
    message = explain_stats_mismatch((x.amax(-1, keepdim=True), l_nan), blocks)  # NaN in a row with no -inf at all
    assert "not -inf - -inf" in message, message

    q, k, v, _ = case()
    out, lse = tiled_with_mistake(q, k, v, 3, 4)
    out[0, 1] = float("nan")  # a row without any masked block: overflow, not -inf - -inf
    message = explain_tiled_mismatch((out.float(), lse.float()), q.float(), k.float(), v.float(), 3, 4)
    assert "not -inf - -inf" in message and "largest score" in message, message

    outputs = [torch.randn(1, 2, 3, generator=gen) for _ in range(2)]
    lses = [torch.randn(1, 2, generator=gen) for _ in range(2)]  # small: exp(lse_i) cannot overflow
    got = merge_with_mistake(outputs, lses)
    got[0][0, 0] = float("nan")
    message = explain_merge_mismatch(got, outputs, lses)
    assert "without their maxima" not in message and "did not overflow" in message, message


def test_mistakes_that_give_the_same_result_are_all_named():
    # T=3 queries after 4 cached keys, blocks of 2 x 3: dropping the ragged last key block and stopping
    # the causal loop one block early both lose key 6, so neither alone may be blamed.
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, n, 8, generator=gen, dtype=torch.float64) for n in (3, 7, 7))
    wrong, wrong_lse = tiled_with_mistake(q, k, v, 2, 3, True, None, "ragged_k")
    same, _ = tiled_with_mistake(q, k, v, 2, 3, True, None, "skip_floor")
    assert torch.allclose(wrong, same)
    message = explain_tiled_mismatch((wrong, wrong_lse), q, k, v, 2, 3, True)
    assert "one of these mistakes" in message
    assert TILED_MISTAKES["ragged_k"] in message and TILED_MISTAKES["skip_floor"] in message, message


def test_empty_rows_that_are_not_zero_are_named_without_guessing_a_cause():
    q, k, v, keys = case()
    right, lse = tiled_with_mistake(q, k, v, 3, 4, True, keys)
    empty = ~(keys & torch.ones(7, 11, dtype=torch.bool).tril(4)).any(-1)  # (B, T): queries with no allowed key
    assert empty.any()
    wrong = right.masked_scatter(empty[..., None].expand_as(right), v.mean(-2, keepdim=True).expand_as(right))
    message = explain_tiled_mismatch((wrong, lse), q, k, v, 3, 4, True, keys)
    assert "only the queries with no allowed key are wrong" in message, message
