"""The measuring tools of ``benchmarks/vs_hf.py`` and ``weight_layout.py``, checked on known cases.

The benchmark itself is never run here (it takes minutes and needs a quiet
machine); its helpers are: the peak-memory measurement against allocations of
known sizes, the interleaving order, the bytes and FLOPs per decode step
against a hand count, the weight shapes of a decode step against a real model.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from attnlab.llama import LlamaConfig, LlamaLM

SPEC = importlib.util.spec_from_file_location("vs_hf", Path(__file__).parents[1] / "benchmarks" / "vs_hf.py")
vs_hf = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(vs_hf)
LAYOUT_SPEC = importlib.util.spec_from_file_location(
    "weight_layout", Path(__file__).parents[1] / "benchmarks" / "weight_layout.py")
weight_layout = importlib.util.module_from_spec(LAYOUT_SPEC)
sys.modules.setdefault("vs_hf", vs_hf)  # weight_layout.py imports its neighbour by name
LAYOUT_SPEC.loader.exec_module(weight_layout)
CPU = torch.device("cpu")


def test_peak_memory_growth_sees_the_peak_not_the_end():
    def allocate():
        a = torch.zeros(1000, 1000)  # 4 MB
        b = torch.zeros(2000, 1000)  # 8 MB: 12 MB alive here
        del a
        c = torch.zeros(500, 1000)  # 2 MB: 10 MB alive
        return b.sum() + c.sum()

    assert vs_hf.peak_memory_growth(allocate, CPU) == 12_000_000


def test_interleaving_rotates_the_order():
    calls = []
    timing = vs_hf.interleaved({name: (lambda n=name: calls.append(n)) for name in "abc"}, 3, CPU)
    assert calls[:3] == list("abc")  # the warm-up
    assert calls[3:] == list("abc") + list("bca") + list("cab")
    assert set(timing) == set("abc") and all(len(t["all"]) == 3 and t["min"] <= t["median"] for t in timing.values())


def test_bytes_and_flops_per_decode_step():
    config = LlamaConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=32)
    model = LlamaLM(config)
    C, F, V, kv = 16, 32, 50, 2 * 4  # kv = Hkv * D
    matrices = 2 * (C * C + 2 * C * kv + C * C + 3 * C * F) + V * C  # per layer q, k, v, o, MLP; the LM head
    norms = (2 * 2 + 1) * C
    assert vs_hf.weight_bytes_per_step(model, batch=3) == 4 * (matrices + norms + 3 * C)  # + 3 embedding rows
    assert vs_hf.decode_flops_per_step(model, batch=3) == 2 * 3 * matrices


def test_weight_layout_times_every_matrix_of_a_decode_step():
    transformers = pytest.importorskip("transformers")
    sizes = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    model = LlamaLM.from_hf(transformers.LlamaConfig(**sizes, tie_word_embeddings=False),
                            transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes)).state_dict())
    shapes = weight_layout.step_weight_shapes(sizes)
    layer = model.layers[0]
    want = [tuple(layer.self_attn.qkv.weight.shape), tuple(layer.self_attn.o_proj.weight.shape),
            tuple(layer.mlp.gate_up.weight.shape), tuple(layer.mlp.down_proj.weight.shape)]
    assert shapes == want * 2 + [tuple(model.lm_head.weight.shape)]
    # the model stores every one of them input-major, the layout the benchmark times against row-major
    matrices = [layer.self_attn.qkv.weight, layer.self_attn.o_proj.weight, layer.mlp.gate_up.weight,
                layer.mlp.down_proj.weight, model.lm_head.weight]
    assert all(w.t().is_contiguous() and not w.is_contiguous() for w in matrices)
