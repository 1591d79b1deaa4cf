"""Chapter 6's diagnosis (attnlab.diagnose_gqa): the right mistake is named, and none is named
where the "mistake" gives the right answer for these inputs (one K/V head, one head per group)."""

import torch
import torch.nn.functional as F

from attnlab.diagnose_gqa import explain_gqa_mismatch, explain_pooling_mismatch, explain_repeat_kv_mismatch


def test_repeat_kv_reports_type_shape_and_dtype_before_values():
    x = torch.randn(2, 3, 4, 5)
    assert "must be a tensor" in explain_repeat_kv_mismatch([1, 2], x, 2)
    assert "must have shape (2, 6, 4, 5)" in explain_repeat_kv_mismatch(x, x, 2)
    assert "keep the dtype of x" in explain_repeat_kv_mismatch(x.repeat_interleave(2, 1).double(), x, 2)
    wrong = x.repeat_interleave(2, 1).clone()
    wrong[:, 5] = 0
    assert "output heads [5]" in explain_repeat_kv_mismatch(wrong, x, 2)


def test_tiling_is_not_named_where_it_equals_the_right_answer():
    x = torch.randn(1, 1, 3, 4)  # one K/V head: tiling and repeat_interleave agree
    assert "repeat (tiling" not in explain_repeat_kv_mismatch(x.repeat(1, 3, 1, 1) + 1, x, 3)
    q, k, v = torch.randn(1, 4, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    wrong = F.scaled_dot_product_attention(q, k, v, enable_gqa=True) + 0.5
    assert "h % Hkv" not in explain_gqa_mismatch(wrong, q, k, v)


def test_gqa_output_shape_nan_and_chapter_1_mistakes():
    q, k, v = torch.randn(2, 6, 3, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    assert "shape of q" in explain_gqa_mismatch(torch.zeros(2, 3, 3, 5), q, k, v)
    assert "NaN" in explain_gqa_mismatch(torch.full((2, 6, 3, 5), float("nan")), q, k, v)
    unscaled = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, scale=1.0)
    assert "did not scale" in explain_gqa_mismatch(unscaled, q, k, v)


def test_pooling_candidates_that_equal_the_mean_are_not_named():
    weight = torch.randn(4 * 3, 8)  # H=4 heads of D=3
    # n_kv_heads == H: every "group" has one head, so first head == sum == mean
    assert "Looks like" not in explain_pooling_mismatch(weight + 1.0, weight, 4, 3)
    summed = weight.reshape(2, 2, 3, 8).sum(1).reshape(6, 8)
    assert "summed" in explain_pooling_mismatch(summed, weight, 2, 3)
