"""attnlab.memory.peak_tensor_memory: the peak bytes of the tensors a call creates.

Expected values are computed from shapes and dtypes here, and the tracker is
checked against two measurements nobody here wrote: the Linux kernel's peak
resident set size (VmHWM, reset through /proc/self/clear_refs) and, on CUDA,
PyTorch's caching allocator (torch.cuda.max_memory_allocated).
"""

from pathlib import Path

import pytest
import torch

from attnlab import KVCache, LlamaConfig, LlamaLM, generate
from attnlab.memory import peak_tensor_memory

FLOAT32 = 4  # bytes per number
MiB = 2**20


def test_counts_new_tensors_and_their_lifetimes():
    def work():
        a = torch.zeros(1000)  # 4000 bytes
        b = a + 1  # 8000 live
        del a  # 4000 live
        c = b * 2  # 8000 live
        return c

    _, report = peak_tensor_memory(work)
    assert report.peak_bytes == 2 * 1000 * FLOAT32
    assert report.retained_bytes == 1000 * FLOAT32  # only the returned c
    assert report.allocator_peak_bytes is None


def test_views_and_in_place_results_are_not_new_memory():
    def work():
        x = torch.zeros(10, 100)
        x[2:].add_(1)
        x.view(1000).mul_(3)
        return x.t(), x[:, 5], x.reshape(1000)

    _, report = peak_tensor_memory(work)
    assert report.peak_bytes == 1000 * FLOAT32


def test_tensors_that_existed_before_are_not_counted():
    weights = torch.randn(500, 500)

    def work():
        weights.mul_(2)
        return weights[:10].sum()  # a view, then a new 0-d tensor

    _, report = peak_tensor_memory(work)
    assert report.peak_bytes == FLOAT32


def test_a_kv_cache_is_counted_at_its_buffer_size():
    B, Hkv, capacity, D = 2, 3, 16, 8
    cache, report = peak_tensor_memory(
        lambda: KVCache(batch_size=B, n_kv_heads=Hkv, capacity=capacity, head_dim=D, dtype=torch.float32)
    )
    assert report.peak_bytes == report.retained_bytes == 2 * B * Hkv * capacity * D * FLOAT32
    del cache


def test_generation_peak_shrinks_by_the_cache_difference():
    """MHA -> MQA at equal sizes: the peaks differ by (at least) the caches' difference."""
    peaks = {}
    B, P, N, layers, H, D = 2, 64, 8, 2, 4, 16
    for Hkv in (4, 1):
        torch.manual_seed(0)
        model = LlamaLM(LlamaConfig(vocab_size=40, d_model=H * D, n_layers=layers, n_heads=H, n_kv_heads=Hkv, max_seq_len=128))
        ids = torch.randint(3, 40, (B, P))
        _, report = peak_tensor_memory(lambda: generate(model, ids, max_new_tokens=N))
        peaks[Hkv] = report.peak_bytes
    cache_difference = 2 * layers * (4 - 1) * D * FLOAT32 * B * (P + N)
    assert peaks[4] - peaks[1] >= cache_difference


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _vm_kib("VmHWM")
        return True
    except (OSError, KeyError):
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_peak_agrees_with_the_kernels_peak_resident_set_size():
    n = 16 * MiB // FLOAT32  # 16 MiB tensors: allocated with mmap, returned to the OS when freed

    def work():
        a, b, c = torch.ones(n), torch.ones(n), torch.ones(n)  # 48 MiB
        del a
        d = torch.ones(n) + b  # 64 MiB at the peak (b, c, ones, d)
        del b, c
        return d

    torch.ones(1)  # anything lazily initialised is initialised before the reset
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _vm_kib("VmRSS") * 1024
    result, report = peak_tensor_memory(work)
    rss_peak = _vm_kib("VmHWM") * 1024 - before
    assert report.peak_bytes == 4 * 16 * MiB
    assert 0.95 * report.peak_bytes <= rss_peak <= 1.05 * report.peak_bytes + 4 * MiB, (rss_peak / MiB)
    del result


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_agrees_with_the_cuda_allocator():
    device = torch.device("cuda")
    model = LlamaLM(LlamaConfig(vocab_size=40, d_model=256, n_layers=2, n_heads=8, n_kv_heads=2, max_seq_len=512), device=device)
    ids = torch.randint(3, 40, (4, 256), device=device)
    generate(model, ids, max_new_tokens=2)  # cuBLAS handles and workspaces exist before we measure
    _, report = peak_tensor_memory(lambda: generate(model, ids, max_new_tokens=16), device=device)
    # The allocator also holds kernel workspaces and rounds every block up to 512 bytes.
    assert report.allocator_peak_bytes is not None
    assert 0.9 * report.allocator_peak_bytes <= report.peak_bytes <= 1.05 * report.allocator_peak_bytes


def test_refuses_what_it_cannot_call():
    with pytest.raises(ValueError, match="fn must be a callable taking no arguments, got Tensor"):
        peak_tensor_memory(torch.zeros(3))
