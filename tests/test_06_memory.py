"""attnlab.memory.peak_allocated_bytes: the peak bytes a call allocates (chapters 6 and 8).

Expected values are computed from shapes and dtypes here, and the measurement is checked
against one nobody here wrote: the Linux kernel's peak resident set size (VmHWM, reset
through /proc/self/clear_refs).
"""

from pathlib import Path

import pytest
import torch

from attnlab import KVCache, LlamaConfig, LlamaLM, generate
from attnlab.memory import peak_allocated_bytes

FLOAT32 = 4  # bytes per number
MiB = 2**20
SLACK = 256  # bytes: the few scalars a call allocates besides its tensors


def test_counts_new_tensors_and_their_lifetimes():
    def work():
        a = torch.zeros(1000)  # 4000 bytes
        b = a + 1  # 8000 live
        del a  # 4000 live
        return b * 2  # 8000 live

    _, peak = peak_allocated_bytes(work)
    assert 2 * 1000 * FLOAT32 <= peak <= 2 * 1000 * FLOAT32 + SLACK


def test_views_and_in_place_results_are_not_new_memory():
    x = torch.zeros(10, 100)

    def work():
        x[2:].add_(1)
        x.view(1000).mul_(3)
        return x.t(), x[:, 5], x.reshape(1000)

    _, peak = peak_allocated_bytes(work)
    assert peak <= SLACK


def test_a_kv_cache_is_counted_at_its_buffer_size():
    B, Hkv, capacity, D = 2, 3, 16, 8
    cache, peak = peak_allocated_bytes(
        lambda: KVCache(batch_size=B, n_kv_heads=Hkv, capacity=capacity, head_dim=D, dtype=torch.float32))
    assert 2 * B * Hkv * capacity * D * FLOAT32 <= peak <= 2 * B * Hkv * capacity * D * FLOAT32 + SLACK
    del cache


def test_generation_peak_shrinks_by_the_cache_difference():
    """MHA -> MQA at equal sizes: the peaks differ by (at least) the caches' difference.

    The caches are allocated after the prefill (the peak is the larger phase, not the sum), so a
    short prompt and a long generation keep the decode phase, where the caches live, the larger.
    """
    peaks = {}
    B, P, N, layers, H, D = 2, 8, 64, 2, 4, 16
    for Hkv in (4, 1):
        torch.manual_seed(0)
        model = LlamaLM(LlamaConfig(vocab_size=40, d_model=H * D, n_layers=layers, n_heads=H, n_kv_heads=Hkv,
                                    max_seq_len=128))
        ids = torch.randint(3, 40, (B, P))
        _, peaks[Hkv] = peak_allocated_bytes(lambda: generate(model, ids, max_new_tokens=N))
    cache_difference = 2 * layers * (4 - 1) * D * FLOAT32 * B * (P + N)
    assert peaks[4] - peaks[1] >= 0.9 * cache_difference


def _vm_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_peak_rss():
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

    peak_allocated_bytes(lambda: torch.ones(1))  # the profiler's own first-use allocations happen now
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _vm_kib("VmRSS") * 1024
    result, peak = peak_allocated_bytes(work)
    rss_peak = _vm_kib("VmHWM") * 1024 - before
    assert 4 * 16 * MiB <= peak <= 4 * 16 * MiB + SLACK
    # 8 MiB either way: the rest of the process also allocates and frees pages meanwhile (seen: 3.6 MiB
    # less on CI); one 16 MiB tensor more or less is still caught.
    assert peak - 8 * MiB <= rss_peak <= 1.05 * peak + 8 * MiB, (rss_peak / MiB)
    del result


def test_refuses_what_it_cannot_call():
    with pytest.raises(ValueError, match="fn must be a callable taking no arguments, got Tensor"):
        peak_allocated_bytes(torch.zeros(3))
