"""The head diagnoses of chapters 5 and 6 name the mistake that reproduces a wrong answer."""

import math

import pytest
import torch
from torch import nn

from attnlab import AttentionConfig, GroupedQueryAttention, MultiHeadAttention
from attnlab.diagnose import (explain_gqa_mismatch, explain_merge_mismatch, explain_multihead_mismatch,
                              explain_pooling_mismatch, explain_repeat_kv_mismatch, explain_split_mismatch)
from attnlab.diagnose_heads import explain_mha_weights_mismatch
from attnlab.heads import merge_heads
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


def _module_and_input(C, H, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(C, H, batch_first=True).eval()
    module = MultiHeadAttention(AttentionConfig(C, H))
    copy_torch_mha_weights(module, ref)
    return module, torch.randn(2, 5, C)


def _attend_with_scale(module, x, H, scale):
    with torch.no_grad():
        q, k, v = module.split(*module.project(x))
        return module.o_proj(module.merge(torch.softmax(q @ k.transpose(-2, -1) * scale, -1) @ v))


def test_scaled_twice_is_told_apart_from_sqrt_model_width_when_D_is_not_sqrt_C():
    module, x = _module_and_input(12, 3)  # D = 4, sqrt(C) = 3.46
    twice = explain_multihead_mismatch(_attend_with_scale(module, x, 3, 1 / 4), module, x, 3)
    assert "scaled the logits twice" in twice and "1/sqrt(C)" not in twice
    width = explain_multihead_mismatch(_attend_with_scale(module, x, 3, 1 / math.sqrt(12)), module, x, 3)
    assert "1/sqrt(C)" in width and "twice" not in width


def test_scale_mistakes_that_coincide_are_named_together():
    module, x = _module_and_input(16, 4)  # D = 4 = sqrt(C): 1/D and 1/sqrt(C) are the same scale
    both = explain_multihead_mismatch(_attend_with_scale(module, x, 4, 1 / 4), module, x, 4)
    assert "1/sqrt(C)" in both and "twice" in both and "one of these" in both


def test_right_answers_are_not_blamed():
    module, x = _module_and_input(12, 3)
    with torch.no_grad():
        out, weights = module(x)
    assert "is right" in explain_multihead_mismatch(out, module, x, 3)
    assert "are right" in explain_mha_weights_mismatch(weights, out, module, x, 3)
    heads = torch.randn(2, 3, 5, 4)
    y = torch.randn(2, 5, 12)
    assert "is right" in explain_split_mismatch(y.reshape(2, 5, 3, 4).transpose(1, 2), y, 3)
    assert "is right" in explain_merge_mismatch(heads.transpose(1, 2).reshape(2, 5, 12), heads)


def test_weights_mistakes_are_named():
    module, x = _module_and_input(12, 3)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        out, weights = module(x, attn_mask=causal)
        _, unmasked = module(x)
    said = explain_mha_weights_mismatch(unmasked, out, module, x, 3, causal)
    assert "ignored attn_mask" in said
    assert "do not average them over the heads" in explain_mha_weights_mismatch(weights.mean(1), out, module, x, 3, causal)
    noisy = weights + 0.01 * torch.rand_like(weights)  # not the weights the output was computed from
    assert "output was not computed from the weights you return" in explain_mha_weights_mismatch(
        noisy, out, module, x, 3, causal)
