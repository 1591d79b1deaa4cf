"""The head diagnoses of chapters 5 and 6 name the mistake that reproduces a wrong answer."""

import math

import pytest
import torch
from torch import nn

from attnlab import AttentionConfig, GroupedQueryAttention, MultiHeadAttention
from attnlab.diagnose import (explain_gqa_mismatch, explain_merge_mismatch, explain_multihead_mismatch,
                              explain_pooling_mismatch, explain_repeat_kv_mismatch, explain_split_mismatch)
from attnlab.multihead import copy_torch_mha_weights


def test_split_and_merge_mistakes_are_named():
    x = torch.randn(2, 3, 12)
    strided = x.reshape(2, 3, 3, 4).permute(0, 3, 1, 2)             # view(B, T, D, H)
    assert "view(B, T, D, H)" in explain_split_mismatch(strided, x, 4)
    assert "without transposing" in explain_split_mismatch(x.reshape(2, 4, 3, 3), x, 4)
    assert "wrong axes" in explain_split_mismatch(x.reshape(2, 3, 4, 3).transpose(1, 3), x, 4)
    y = torch.randn(2, 4, 3, 5)
    assert "without transposing back" in explain_merge_mismatch(y.reshape(2, 3, 20), y)
    assert "wrong axes" in explain_merge_mismatch(y.transpose(2, 3).reshape(2, 3, 20), y)


def test_repeat_and_grouping_mistakes_are_named():
    x = torch.randn(1, 2, 3, 4)
    assert "repeat_interleave" in explain_repeat_kv_mismatch(x.repeat(1, 3, 1, 1), x, 3)
    q, k, v = torch.randn(1, 4, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    tiled = torch.softmax(q @ k.repeat(1, 2, 1, 1).transpose(-2, -1) / 2, -1) @ v.repeat(1, 2, 1, 1)
    assert "h % Hkv" in explain_gqa_mismatch(tiled, q, k, v)


def test_pooling_mistakes_are_named():
    weight = torch.randn(8 * 2, 16)                                   # H=8, D=2, C=16
    heads = weight.reshape(8, 2, 16)
    interleaved = heads.reshape(4, 2, 2, 16).mean(0).reshape(4, 16)  # Hkv=2, G=4
    assert "interleaved" in explain_pooling_mismatch(interleaved, weight, 2, 2)
    first = heads.reshape(2, 4, 2, 16)[:, 0].reshape(4, 16)
    assert "first head" in explain_pooling_mismatch(first, weight, 2, 2)
    assert "no memory is saved" in explain_pooling_mismatch(weight, weight, 2, 2)


@pytest.mark.parametrize("mistake", ["scale", "no_output", "strided"])
def test_module_mistakes_are_named(mistake):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    module = MultiHeadAttention(AttentionConfig(16, 4))
    copy_torch_mha_weights(module, ref)
    assert torch.equal(module.k_proj.weight, ref.in_proj_weight[16:32])
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        q, k, v = module.split(*module.project(x))
        if mistake == "strided":
            split = lambda t: t.reshape(2, 5, 4, 4).permute(0, 3, 1, 2)  # noqa: E731
            merge = lambda t: t.permute(0, 2, 3, 1).reshape(2, 5, 16)    # noqa: E731
            q, k, v = (split(p) for p in module.project(x))
        scale = 1 / math.sqrt(16) if mistake == "scale" else 1 / math.sqrt(4)
        out = torch.softmax(q @ k.transpose(-2, -1) * scale, -1) @ v
        out = merge(out) if mistake == "strided" else module.merge(out)
        got = out if mistake == "no_output" else module.o_proj(out)
    words = {"scale": "1/sqrt(C)", "no_output": "output projection", "strided": "view(B, T, D, H)"}[mistake]
    assert words in explain_multihead_mismatch(got, module, x, 4)


def test_gqa_module_tiling_is_named_and_bad_weights_refused():
    torch.manual_seed(1)
    gqa = GroupedQueryAttention(AttentionConfig(16, 4, n_kv_heads=2))
    x = torch.randn(1, 3, 16)
    with torch.no_grad():
        q, k, v = gqa.split(*gqa.project(x))
        k, v = k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)
        got = gqa.output(gqa.merge(torch.softmax(q @ k.transpose(-2, -1) / 2, -1) @ v))
    assert "h % Hkv" in explain_multihead_mismatch(got, gqa, x, 4, n_kv_heads=2)
    with pytest.raises(ValueError, match=r"in_proj_weight has shape \(48, 16\).*\(32, 16\)"):
        copy_torch_mha_weights(gqa, nn.MultiheadAttention(16, 4, batch_first=True))
