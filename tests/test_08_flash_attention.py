"""Chapter 8: the online softmax, tiled attention and split-K decoding.

Every expected value comes from PyTorch itself: ``torch.softmax``,
``torch.logsumexp``, ``F.scaled_dot_product_attention`` (with explicit boolean
masks, ``is_causal=True`` where ``T == S``, and PyTorch's own bottom-right
``causal_lower_right`` bias), and the profiler's record of the CPU allocator
for memory. The tolerances are the ones the chapter states.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from torch.utils.flop_counter import FlopCounterMode

from attnlab.flash import (
    merge_partials,
    online_softmax,
    online_softmax_stats,
    split_k_attention,
    tiled_attention,
)
from attnlab.memory import peak_allocated_bytes

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is fastest on a shared machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_case(gen, dtype=torch.float32, max_len=24):
    """Random (B, H, T, S, D, Dv) with T <= S, random q, k, v, and random block sizes."""
    B, H = (int(n) for n in torch.randint(1, 4, (2,), generator=gen))
    D, Dv = (int(n) for n in torch.randint(1, 17, (2,), generator=gen))
    S = int(torch.randint(1, max_len, (1,), generator=gen))
    T = int(torch.randint(1, S + 1, (1,), generator=gen))
    q = torch.randn(B, H, T, D, generator=gen, dtype=dtype)
    k = torch.randn(B, H, S, D, generator=gen, dtype=dtype)
    v = torch.randn(B, H, S, Dv, generator=gen, dtype=dtype)
    block_q, block_k = (int(n) for n in torch.randint(1, 10, (2,), generator=gen))
    return q, k, v, block_q, block_k


def bottom_right(T, S):
    """Offset-aware causal mask built without attnlab: query i sees keys j <= S - T + i."""
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)


def masked_lse(q, k, allowed):
    """log-sum-exp of each row's allowed scores, from torch.logsumexp."""
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).logsumexp(dim=-1)


def sdpa_zero_empty(q, k, v, allowed):
    """PyTorch's attention with rows that allow no key set to 0 (the package's convention)."""
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    empty = ~allowed.any(dim=-1, keepdim=True)
    return expected.masked_fill(empty, 0.0)


# ---------------------------------------------------------------- online softmax


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_online_softmax_equals_torch_softmax(dtype):
    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        rows, n = (int(x) for x in torch.randint(1, 50, (2,), generator=gen))
        x = torch.randn(rows, n, generator=gen, dtype=dtype) * 10
        block = int(torch.randint(1, n + 5, (1,), generator=gen))  # ragged, == n, and > n
        torch.testing.assert_close(online_softmax(x, block), torch.softmax(x, dim=-1), rtol=0, atol=TOLERANCE[dtype])


def test_online_softmax_stats_are_max_and_shifted_sum_in_one_pass():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 37, generator=gen, dtype=torch.float64) * 5
    blocks = (block for block in x.split(8, dim=-1))  # a generator: it can be read only once
    row_max, denominator = online_softmax_stats(blocks)
    want_max = x.amax(dim=-1, keepdim=True)
    assert torch.equal(row_max, want_max)
    torch.testing.assert_close(denominator, torch.exp(x - want_max).sum(dim=-1, keepdim=True), rtol=1e-14, atol=0)
    assert next(blocks, None) is None


def test_online_softmax_large_logits_and_empty_rows():
    x = torch.tensor([[1000.0, 999.0, -1000.0, 998.0],
                      [float("-inf")] * 4,
                      [float("-inf"), 3.0, float("-inf"), float("-inf")]])
    got = online_softmax(x, block_size=1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0], torch.softmax(x[0], dim=-1))
    assert torch.equal(got[1], torch.zeros(4)), "a row of -inf gives zeros, not NaN"
    assert torch.equal(got[2], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    row_max, denominator = online_softmax_stats(x.split(1, dim=-1))
    assert row_max[1].item() == float("-inf") and denominator[1].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_online_softmax_low_precision(dtype):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(6, 33, generator=gen) * 8).to(dtype)
    got = online_softmax(x, block_size=5)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), torch.softmax(x.float(), dim=-1), rtol=0, atol=4e-3)
    row_max, denominator = online_softmax_stats(x.split(5, dim=-1))
    assert row_max.dtype == denominator.dtype == torch.float32, "statistics accumulate in float32"


# ---------------------------------------------------------------- tiled attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_attention_equals_pytorch(dtype):
    gen = torch.Generator().manual_seed(3)
    for trial in range(25):
        q, k, v, block_q, block_k = random_case(gen, dtype)
        T, S = q.shape[-2], k.shape[-2]
        out, lse = tiled_attention(q, k, v, block_q=block_q, block_k=block_k)
        assert out.shape == (*q.shape[:-1], v.shape[-1]) and out.dtype == dtype and lse.shape == q.shape[:-1]
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=TOLERANCE[dtype])
        torch.testing.assert_close(lse.double(), masked_lse(q, k, torch.ones(T, S, dtype=torch.bool)),
                                   rtol=0, atol=TOLERANCE[dtype] * 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_causal_is_bottom_right_aligned(dtype):
    gen = torch.Generator().manual_seed(4)
    for trial in range(25):
        q, k, v, block_q, block_k = random_case(gen, dtype)
        T, S = q.shape[-2], k.shape[-2]
        out, lse = tiled_attention(q, k, v, is_causal=True, block_q=block_q, block_k=block_k)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right(T, S))
        torch.testing.assert_close(out, expected, rtol=0, atol=TOLERANCE[dtype])
        # PyTorch's own bottom-right causal bias (what FlashAttention >= 2.1 does) agrees.
        lower_right = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S))
        torch.testing.assert_close(out, lower_right, rtol=0, atol=TOLERANCE[dtype])
        if T == S:
            torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                       rtol=0, atol=TOLERANCE[dtype])
        torch.testing.assert_close(lse.double(), masked_lse(q, k, bottom_right(T, S)), rtol=0,
                                   atol=TOLERANCE[dtype] * 10)


def test_tiled_attention_with_boolean_masks_and_fully_masked_rows():
    gen = torch.Generator().manual_seed(5)
    for trial in range(25):
        q, k, v, block_q, block_k = random_case(gen, torch.float64)
        (B, H, T, _), S = q.shape, k.shape[-2]
        shape = [(B, H, T, S), (B, 1, 1, S), (T, S), (1, H, T, 1)][trial % 4]
        mask = torch.rand(shape, generator=gen) < 0.5
        mask[..., 0, :] = False  # at least one fully masked row
        causal = trial % 3 == 0
        out, lse = tiled_attention(q, k, v, attn_mask=mask, is_causal=causal, block_q=block_q, block_k=block_k)
        allowed = mask & bottom_right(T, S) if causal else mask.expand(B, H, T, S)
        assert torch.isfinite(out).all(), "no NaN, even in fully masked rows"
        torch.testing.assert_close(out, sdpa_zero_empty(q, k, v, allowed), rtol=0, atol=1e-12)
        empty = ~allowed.expand(B, H, T, S).any(dim=-1)
        assert (out[empty] == 0).all() and (lse[empty] == float("-inf")).all()
        torch.testing.assert_close(lse[~empty], masked_lse(q, k, allowed)[~empty], rtol=0, atol=1e-10)


def test_tiled_attention_fully_masked_first_block_is_not_nan():
    # Left padding: the first key block of row 1 is all pads, so its running max stays -inf for a while.
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 1, n, 4, generator=gen) for n in (6, 9, 9))
    keys = torch.tensor([[True] * 9, [False] * 5 + [True] * 4])[:, None, None, :]  # (B, 1, 1, S)
    out, _ = tiled_attention(q, k, v, attn_mask=keys, is_causal=True, block_q=2, block_k=3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, sdpa_zero_empty(q, k, v, keys & bottom_right(6, 9)), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_tiled_attention_low_precision(dtype, atol):
    gen = torch.Generator().manual_seed(7)
    for trial in range(10):
        q, k, v, block_q, block_k = (x.to(dtype) if torch.is_tensor(x) else x for x in random_case(gen))
        T, S = q.shape[-2], k.shape[-2]
        out, lse = tiled_attention(q, k, v, is_causal=True, block_q=block_q, block_k=block_k)
        assert out.dtype == dtype and lse.dtype == torch.float32
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bottom_right(T, S))
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=atol)
    big = torch.full((1, 4, 8), 40.0, dtype=dtype)  # scores of 40 * 40 * 8 / sqrt(8), far beyond float16
    out, _ = tiled_attention(big, big, big, block_q=2, block_k=3)
    assert torch.isfinite(out).all()


def test_tiled_attention_leaves_inputs_unchanged_and_accepts_views():
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 7, 3, 5, generator=gen) for _ in range(3))
    mask = torch.rand(2, 3, 7, 7, generator=gen) < 0.7
    copies = [t.clone() for t in (q, k, v, mask)]
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D) -> (B, H, T, D), non-contiguous
    out, _ = tiled_attention(qt, kt, vt, attn_mask=mask, is_causal=True, block_q=3, block_k=2)
    for t, copy in zip((q, k, v, mask), copies):
        assert torch.equal(t, copy)
    torch.testing.assert_close(out, sdpa_zero_empty(qt, kt, vt, mask & bottom_right(7, 7)))


def test_causal_blocks_right_of_the_diagonal_are_skipped():
    """Counted by PyTorch's FLOP counter, not by the code's own arithmetic."""
    q, k, v = (torch.randn(1, 2, 256, 32) for _ in range(3))

    def flops(**kwargs):
        with FlopCounterMode(display=False) as counter:
            tiled_attention(q, k, v, block_q=32, block_k=32, **kwargs)
        return counter.get_total_flops()

    full, causal = flops(), flops(is_causal=True)
    blocks = 256 // 32
    assert causal == full * (blocks * (blocks + 1) // 2) // blocks**2, (causal, full)
    # T != S: 64 queries after 192 cached keys; no key block right of the last query's diagonal.
    q_new = q[:, :, -64:]
    with FlopCounterMode(display=False) as counter:
        tiled_attention(q_new, k, v, is_causal=True, block_q=32, block_k=32)
    per_block = full // blocks**2
    assert counter.get_total_flops() == per_block * (7 + 8), counter.get_total_flops()


def test_memory_grows_with_T_times_block_not_T_times_S():
    """Peak allocation measured by the profiler's record of the CPU allocator."""
    T, D, block = 128, 16, 32

    def peak(S, fn):
        gen = torch.Generator().manual_seed(9)
        q, k, v = torch.randn(1, 1, T, D, generator=gen), *(torch.randn(1, 1, S, D, generator=gen) for _ in range(2))
        with torch.inference_mode():
            return peak_allocated_bytes(lambda: fn(q, k, v))[1]

    def tiled(q, k, v):
        return tiled_attention(q, k, v, block_q=block, block_k=block)[0]

    def naive(q, k, v):
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)
        return torch.softmax(scores, dim=-1) @ v

    small, large = peak(256, tiled), peak(2048, tiled)
    naive_large = peak(2048, naive)
    assert naive_large >= T * 2048 * 4, "the naive version holds the (T, S) float32 scores"
    assert large <= 1.25 * small, f"tiled peak grew with S: {small} -> {large} bytes"
    assert large < naive_large / 10
    # Beyond the (T, D) output and statistics, a few (block, block) tiles.
    assert large <= 4 * (T * D * 4) + 8 * (block * block * 4), large


# ---------------------------------------------------------------- split-K and merging


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_k_attention_equals_pytorch(dtype):
    gen = torch.Generator().manual_seed(10)
    for trial in range(20):
        q, k, v, _, split = random_case(gen, dtype, max_len=40)
        (B, H, T, _), S = q.shape, k.shape[-2]
        q = q[:, :, -1:] if trial % 2 else q  # decoding: one query
        T = q.shape[-2]
        mask = torch.rand(B, 1, 1, S, generator=gen) < 0.8
        out, lse = split_k_attention(q, k, v, split, attn_mask=mask)
        torch.testing.assert_close(out, sdpa_zero_empty(q, k, v, mask.expand(B, H, T, S)), rtol=0,
                                   atol=TOLERANCE[dtype])
        causal, _ = split_k_attention(q, k, v, split, is_causal=True)
        torch.testing.assert_close(causal, F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right(T, S)),
                                   rtol=0, atol=TOLERANCE[dtype])
        tiled, tiled_lse = tiled_attention(q, k, v, attn_mask=mask, block_k=split)
        torch.testing.assert_close(lse, tiled_lse, rtol=0, atol=TOLERANCE[dtype] * 10)


def test_merge_partials_of_a_random_partition_is_the_whole():
    gen = torch.Generator().manual_seed(11)
    q, k, v = torch.randn(2, 3, 1, 8, generator=gen), torch.randn(2, 3, 50, 8, generator=gen), torch.randn(2, 3, 50, 4, generator=gen)
    k = k * 30  # scores in the hundreds: exp(lse) alone would overflow float32
    cuts = [0, 1, 17, 18, 40, 50]
    parts = [tiled_attention(q, k[:, :, a:b], v[:, :, a:b]) for a, b in zip(cuts, cuts[1:])]
    out, lse = merge_partials([p[0] for p in parts], [p[1] for p in parts])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-5)
    torch.testing.assert_close(lse, torch.logsumexp(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1), rtol=1e-6, atol=0)
    assert lse.abs().max() > 89, "the test needs exp(lse) to overflow float32"


def test_merge_partials_with_empty_partials():
    out_a, lse_a = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.5, float("-inf")])
    out_b, lse_b = torch.zeros(2, 2), torch.tensor([float("-inf"), float("-inf")])
    out, lse = merge_partials([out_a, out_b], [lse_a, lse_b])
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    assert lse[0].item() == 0.5 and lse[1].item() == float("-inf")


def test_split_k_decode_float16():
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 4, n, 16, generator=gen).half() for n in (1, 333, 333))
    out, lse = split_k_attention(q, k, v, split_size=64)
    assert out.dtype == torch.float16 and lse.dtype == torch.float32
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=2e-3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, None])
def test_bad_block_sizes_raise(bad):
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="block_q"):
        tiled_attention(q, q, q, block_q=bad)
    with pytest.raises(ValueError, match="block_k"):
        tiled_attention(q, q, q, block_k=bad)
    with pytest.raises(ValueError, match="split_size"):
        split_k_attention(q, q, q, split_size=bad)
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(q, block_size=bad)


def test_shapes_that_do_not_fit_raise():
    q, k = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    with pytest.raises(ValueError, match="T=5, S=3"):
        tiled_attention(q, k[:, :3], k[:, :3], is_causal=True)
    with pytest.raises(ValueError, match="same last dim"):
        tiled_attention(q, torch.randn(2, 7, 6), k)
    with pytest.raises(ValueError, match="same number of positions"):
        split_k_attention(q, k, k[:, :6], split_size=2)
    with pytest.raises(ValueError, match=r"\(2, 5, 6\)"):
        tiled_attention(q, k, k, attn_mask=torch.ones(2, 5, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        tiled_attention(q, k, k, attn_mask=torch.ones(5, 7))
    with pytest.raises(ValueError, match="2 outputs, 1 lses"):
        merge_partials([torch.zeros(2, 3), torch.zeros(2, 3)], [torch.zeros(2)])
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3,\)"):
        merge_partials([torch.zeros(2, 3)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="leading dims"):
        online_softmax_stats([torch.zeros(2, 3), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="floating-point"):
        online_softmax(torch.arange(4))


def test_peak_allocated_bytes_sees_temporaries_and_refuses_unknown_devices():
    def make_and_drop():
        big = torch.ones(1000, 1000)  # 4 MB, freed before the function returns
        return big.sum()

    total, peak = peak_allocated_bytes(make_and_drop)
    assert total.item() == 1e6
    assert 4_000_000 <= peak < 5_000_000, peak
    _, small = peak_allocated_bytes(lambda: torch.ones(10))
    assert 40 <= small < 4096, small
    with pytest.raises(ValueError, match="meta"):
        peak_allocated_bytes(lambda: None, device="meta")
