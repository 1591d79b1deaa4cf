"""The package on a GPU: the same answers as on the CPU and as PyTorch's own kernels.

Skipped where there is no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. The references are PyTorch's
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` on the same
device, and the package's own CPU results (which the other test files hold
against PyTorch and ``transformers``).

Tolerances: float32 ``ATOL = 1e-4`` (TF32 is off for these tests), float16
``2e-3`` against float32 math on the same inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention import scaled_dot_product_attention
from attnlab.cache import KVCache
from attnlab.flash import split_k_attention, tiled_attention
from attnlab.generation import generate, generate_with_logits
from attnlab.gqa import GroupedQueryAttention
from attnlab.llama import LlamaConfig, LlamaLM
from attnlab.masks import causal_mask
from attnlab.memory import peak_allocated_bytes
from attnlab.multihead import AttentionConfig, MultiHeadAttention, copy_torch_mha_weights
from attnlab.tokenizer import CharTokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU = torch.device("cuda")
ATOL = 1e-4
TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .")
PROMPTS = ["the cat sat", "a dog", "hi", "sun and moon"]


@pytest.fixture(autouse=True)
def exact_float32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def qkv(B=2, H=4, T=5, S=9, D=16, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=generator).to(GPU, dtype) for n in (T, S, S)]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, ATOL), (torch.float16, 2e-3)])
def test_attention_with_a_causal_mask_after_a_cache_matches_pytorch(dtype, atol):
    q, k, v = qkv(dtype=dtype)
    mask = causal_mask(5, 9, device=GPU)  # (T, S): the 5 queries are the last 5 positions
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert out.device.type == "cuda" and out.dtype == dtype and weights.device.type == "cuda"
    torch.testing.assert_close(out.float(), want, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, ATOL), (torch.float16, 2e-3)])
def test_tiled_and_split_k_attention_match_pytorch(dtype, atol):
    q, k, v = qkv(T=300, S=300, dtype=dtype)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    out, _ = tiled_attention(q, k, v, is_causal=True, block_q=64, block_k=64)
    assert out.device.type == "cuda" and out.dtype == dtype
    torch.testing.assert_close(out.float(), want, atol=atol, rtol=0)
    q1 = q[:, :, -1:]  # one decoding query after 299 cached keys
    out, _ = split_k_attention(q1, k, v, split_size=128)
    torch.testing.assert_close(out.float(), want[:, :, -1:], atol=atol, rtol=0)


def test_multihead_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    torch_mha = nn.MultiheadAttention(32, 4, batch_first=True).to(GPU)
    ours = MultiHeadAttention(AttentionConfig(d_model=32, n_heads=4)).to(GPU)
    copy_torch_mha_weights(ours, torch_mha)
    x = torch.randn(3, 7, 32, device=GPU)
    mask = causal_mask(7, device=GPU)
    with torch.no_grad():
        want, _ = torch_mha(x, x, x, attn_mask=~mask, need_weights=False)
        got, _ = ours(x, attn_mask=mask)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_grouped_query_attention_gives_the_cpu_answer():
    torch.manual_seed(0)
    cpu = GroupedQueryAttention(AttentionConfig(d_model=32, n_heads=4, n_kv_heads=2)).eval()
    gpu = GroupedQueryAttention(AttentionConfig(d_model=32, n_heads=4, n_kv_heads=2)).to(GPU).eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        want, _ = cpu(x, attn_mask=causal_mask(6))
        got, _ = gpu(x.to(GPU), attn_mask=causal_mask(6, device=GPU))
    torch.testing.assert_close(got.cpu(), want, atol=ATOL, rtol=0)


def test_kv_cache_lives_on_its_device_and_refuses_another():
    cache = KVCache(batch_size=1, n_kv_heads=2, capacity=8, head_dim=4, device=GPU)
    k_all, v_all = cache.update(torch.ones(1, 2, 3, 4, device=GPU), torch.ones(1, 2, 3, 4, device=GPU))
    assert k_all.device.type == "cuda" and cache.length == 3
    with pytest.raises(ValueError, match="device"):
        cache.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert cache.length == 3


def llama_pair(attention_impl="fast"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TOK.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_hidden=128, max_seq_len=64, attention_impl=attention_impl)
    cpu = LlamaLM(config).eval()
    gpu = LlamaLM(config).to(GPU).eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


@pytest.mark.parametrize("attention_impl", ["fast", "teaching"])
def test_llama_generation_on_the_gpu_gives_the_cpu_tokens_and_logits(attention_impl):
    cpu, gpu = llama_pair(attention_impl)
    ids, mask = TOK(PROMPTS, padding_side="left")
    with torch.no_grad():
        want_tokens, want_logits = generate_with_logits(cpu, ids, mask, max_new_tokens=8)
        tokens, logits = generate_with_logits(gpu, ids.to(GPU), mask.to(GPU), max_new_tokens=8)
    assert tokens.device.type == "cuda"
    assert gpu.lm_head.weight.is_contiguous() and gpu.layers[0].mlp.gate_up.weight.is_contiguous()  # row-major
    torch.testing.assert_close(logits.cpu(), want_logits, atol=ATOL, rtol=0)
    assert torch.equal(tokens.cpu(), want_tokens)


def test_compiled_generation_with_cuda_graphs_gives_the_eager_tokens():
    _, gpu = llama_pair()
    ids, mask = TOK(PROMPTS, padding_side="left")
    ids, mask = ids.to(GPU), mask.to(GPU)
    with torch.no_grad():
        eager = generate(gpu, ids, mask, max_new_tokens=12)
        compiled = generate(gpu, ids, mask, max_new_tokens=12, compiled=True)
    assert torch.equal(compiled, eager)


def test_peak_memory_on_cuda_counts_a_known_allocation():
    mib = 1 << 20

    def work():
        a = torch.empty(64 * mib, dtype=torch.uint8, device=GPU)
        b = torch.empty(32 * mib, dtype=torch.uint8, device=GPU)
        del a
        return b

    _, peak = peak_allocated_bytes(work, device=GPU)
    assert 96 * mib <= peak <= 97 * mib
