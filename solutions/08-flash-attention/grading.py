"""Assignment 08's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained. Every driver calls the
learner's code inside ``attnlab.diagnose_flash.library_attention_forbidden()``, which makes
torch's softmax and attention and every function of ``attnlab.flash`` (under any alias) raise;
the aten operators of a softmax or of F.scaled_dot_product_attention are refused by
``forbidden_ops`` as well, and their names in the learner's source by ``forbidden_names``.
"""

import math

import torch
import torch.nn.functional as F

from attnlab.testing import SDPA_OPS, SOFTMAX_OPS
from attnlab_grader.authority import Case, Part

FORBIDDEN_OPS = SOFTMAX_OPS | SDPA_OPS
FORBIDDEN_NAMES = frozenset({"softmax", "log_softmax", "_softmax", "scaled_dot_product_attention", "attnlab.flash"})
STATS_CELLS = ("online_softmax_stats",)
SOFTMAX_CELLS = ("online_softmax_stats", "online_softmax")
TILED_CELLS = ("tiled_attention",)
MERGE_CELLS = ("merge_partials",)
ALL_CELLS = ("online_softmax_stats", "online_softmax", "tiled_attention", "merge_partials")


def forbidden(cells):
    return dict(forbidden_ops=FORBIDDEN_OPS, forbidden_names=FORBIDDEN_NAMES, answer_cells=cells)


# ------------------------------------------------------------------ drivers (run in the sandbox)


def drive_stats(learner, inputs):
    """online_softmax_stats on x's blocks, streamed through one reused buffer (read once, left to right)."""
    from attnlab.diagnose_flash import library_attention_forbidden

    def streamed(x, sizes):
        for block in x.split(sizes, dim=-1):
            buffer = block.clone()
            yield buffer
            buffer.fill_(float("nan"))  # the producer reuses its buffer: a block is gone once the next is asked for

    with library_attention_forbidden():
        return learner["online_softmax_stats"](streamed(inputs["x"], inputs["sizes"]))


def drive_online_softmax(learner, inputs):
    from attnlab.diagnose_flash import library_attention_forbidden

    with library_attention_forbidden():
        return learner["online_softmax"](inputs["x"], inputs["block_size"])


def drive_refused(learner, inputs):
    """What a call with bad arguments does: raise ValueError naming the bad values (or not)."""
    from attnlab.diagnose_flash import library_attention_forbidden

    args, kwargs = list(inputs["args"]), dict(inputs.get("kwargs", {}))
    try:
        with library_attention_forbidden():
            learner[inputs["function"]](*args, **kwargs)
    except ValueError as error:
        if all(name in str(error) for name in inputs["named"]):
            return "raised ValueError naming the bad values"
        return "raised ValueError without naming the bad values"
    except AssertionError:  # a forbidden call (library_attention_forbidden): its own message says which
        raise
    except Exception as error:
        return f"raised {type(error).__name__} instead of raising ValueError"
    return "returned instead of raising ValueError"


def drive_tiled(learner, inputs):
    from attnlab.diagnose_flash import library_attention_forbidden

    with library_attention_forbidden():
        return learner["tiled_attention"](inputs["q"], inputs["k"], inputs["v"], inputs["block_q"], inputs["block_k"],
                                          is_causal=inputs["is_causal"], attn_mask=inputs.get("attn_mask"))


def drive_tiled_transposed(learner, inputs):
    """tiled_attention on non-contiguous views: (B, T, H, D) -> (B, H, T, D), called twice."""
    from attnlab.diagnose_flash import library_attention_forbidden

    q, k, v = (inputs[name].transpose(1, 2) for name in ("q", "k", "v"))  # (B, T, H, D) -> (B, H, T, D), views
    mask = inputs.get("attn_mask")
    with library_attention_forbidden():
        first = learner["tiled_attention"](q, k, v, inputs["block_q"], inputs["block_k"],
                                           is_causal=inputs["is_causal"], attn_mask=mask)
        second = learner["tiled_attention"](q, k, v, inputs["block_q"], inputs["block_k"],
                                            is_causal=inputs["is_causal"], attn_mask=mask)
    return first, second


def drive_skipped_blocks(learner, inputs):
    """Whether is_causal=True skips the key blocks right of the diagonal, by the matrix products that run.

    Each query block [q0, q1) needs the key blocks up to the one holding its last query's key
    S - T + q1 - 1: for each (query, key) pair in them, q k^T and p v cost 2 (D + Dv) flops. The
    causal call may spend 10% more than that (a sum done as a product, say), not a key block more.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from attnlab.diagnose_flash import library_attention_forbidden

    q, k, v, block = inputs["q"], inputs["k"], inputs["v"], inputs["block"]
    T, S = q.shape[-2], k.shape[-2]
    flops, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: more threads only wait for each other (10 times slower)
    try:
        for is_causal in (False, True):
            with library_attention_forbidden(), FlopCounterMode(display=False) as counter:
                learner["tiled_attention"](q, k, v, block, block, is_causal=is_causal)
            flops[is_causal] = counter.get_total_flops()
    finally:
        torch.set_num_threads(threads)
    needed = 0  # query-key pairs in the blocks that must be computed
    for q0 in range(0, T, block):
        q1 = min(q0 + block, T)
        needed += (q1 - q0) * min(S, -(-(S - T + q1) // block) * block)
    pair = 2 * (q.shape[-1] + v.shape[-1]) * q.shape[:-2].numel()  # flops per (query, key) pair, all heads
    if flops[False] == 0:
        return "no matrix products: use @ or torch.matmul"
    if flops[True] > 1.1 * pair * needed:
        return f"computed {flops[True] / (pair * T * S):.2f} of the full work, {needed / (T * S):.2f} needed"
    return "skips the key blocks right of the diagonal"


def drive_memory(learner, inputs):
    """Whether the peak memory of tiled_attention stays the same when S grows 4 times (no (T, S) tensor)."""
    from attnlab.diagnose_flash import library_attention_forbidden
    from attnlab.memory import peak_allocated_bytes

    q, k, v, block, is_causal = inputs["q"], inputs["k"], inputs["v"], inputs["block"], inputs["is_causal"]
    S, threads = k.shape[-2], torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: more threads only wait for each other
    try:
        with library_attention_forbidden():
            short = peak_allocated_bytes(lambda: learner["tiled_attention"](
                q, k[..., :S // 4, :], v[..., :S // 4, :], block, block, is_causal=is_causal))[1]
            long = peak_allocated_bytes(lambda: learner["tiled_attention"](
                q, k, v, block, block, is_causal=is_causal))[1]
    finally:
        torch.set_num_threads(threads)
    bool_mask_bytes = q.shape[-2] * S  # the smallest (T, S) tensor there is: a boolean mask
    if long >= bool_mask_bytes or long >= 1.5 * short + 16384:
        return f"peak {long} bytes at S={S}, {short} at S={S // 4}"
    return "the peak does not grow with S"


def drive_merge(learner, inputs):
    from attnlab.diagnose_flash import library_attention_forbidden

    with library_attention_forbidden():
        return learner["merge_partials"](list(inputs["outputs"]), list(inputs["lses"]))


def drive_split_k(learner, inputs):
    """Flash-decoding from the learner's two functions: tiled_attention per chunk of keys, then merge_partials."""
    from attnlab.diagnose_flash import library_attention_forbidden

    q, k, v, split = inputs["q"], inputs["k"], inputs["v"], inputs["split_size"]
    S = k.shape[-2]
    mask = inputs.get("attn_mask")
    if mask is not None:
        mask = mask.expand(*q.shape[:-1], S)  # (*, T, S), a view
    outputs, lses = [], []
    with library_attention_forbidden():
        for start in range(0, S, split):
            chunk = slice(start, start + split)
            out, lse = learner["tiled_attention"](q, k[..., chunk, :], v[..., chunk, :], inputs["block_q"], split,
                                                  attn_mask=None if mask is None else mask[..., chunk])
            outputs.append(out)
            lses.append(lse)
        return learner["merge_partials"](outputs, lses)


def drive_everything(learner, inputs):
    """Each answer once, the way the other parts call it; only the calls count here, not the values."""
    from attnlab.diagnose_flash import library_attention_forbidden

    x, q, k, v, mask = inputs["x"], inputs["q"], inputs["k"], inputs["v"], inputs["attn_mask"]
    with library_attention_forbidden():
        learner["online_softmax_stats"](iter(list(x.split(2, dim=-1))))
        learner["online_softmax"](x, 3)
        out, lse = learner["tiled_attention"](q, k, v, 2, 3, is_causal=True, attn_mask=mask)
        learner["tiled_attention"](q.half(), k.half(), v.half(), 3, 2, is_causal=True)
        learner["merge_partials"]([out, out], [lse, lse - 1.0])
    return "ran without torch's softmax or attention and without attnlab.flash"


# ------------------------------------------------------------------ inputs (drawn here, from the secret seed)


def ints(g, low, high, count=1):
    return [int(n) for n in torch.randint(low, high, (count,), generator=g)]


def ragged_sizes(g, N, widest):
    sizes, left = [], N
    while left:
        sizes.append(min(left, ints(g, 1, widest + 1)[0]))
        left -= sizes[-1]
    return sizes


def tolerance(dtype, exact_dtype=False):
    """Value parts compare float64 to float32 precision: float64 computed in float32 costs only the dtype part."""
    return {torch.float64: 1e-9 if exact_dtype else 1e-5, torch.float32: 1e-5, torch.float16: 2e-3,
            torch.bfloat16: 1e-2}[dtype]


def stats_case(g, x, sizes, label, exact_dtype=False):
    atol = tolerance(x.dtype, exact_dtype)
    return Case(drive_stats, {"x": x, "sizes": sizes}, label=f"{label}; logits {tuple(x.shape)}, {x.dtype}, "
                f"blocks of {sizes}", atol=atol, rtol=atol, exact_dtype=exact_dtype)


def softmax_case(g, x, block_size, label, exact_dtype=False):
    atol = tolerance(x.dtype, exact_dtype)
    return Case(drive_online_softmax, {"x": x, "block_size": block_size}, atol=atol, rtol=atol,
                exact_dtype=exact_dtype, label=f"{label}; x {tuple(x.shape)}, {x.dtype}, block_size={block_size}")


def refused_case(function, args, named, label, **kwargs):
    return Case(drive_refused, {"function": function, "args": args, "kwargs": kwargs, "named": named}, label=label)


def qkv(g, lead, T, S, D, Dv=None, dtype=torch.float32, key_scale=1.0):
    Dv = D if Dv is None else Dv
    q = torch.randn(*lead, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, S, D, generator=g, dtype=torch.float64) * key_scale
    v = torch.randn(*lead, S, Dv, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def tiled_case(g, q, k, v, block_q, block_k, is_causal=False, attn_mask=None, label="", exact_dtype=False):
    inputs = {"q": q, "k": k, "v": v, "block_q": block_q, "block_k": block_k, "is_causal": is_causal}
    if attn_mask is not None:
        inputs["attn_mask"] = attn_mask
    atol = tolerance(q.dtype, exact_dtype)
    described = (f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, {q.dtype}, block_q={block_q}, "
                 f"block_k={block_k}, is_causal={is_causal}"
                 + ("" if attn_mask is None else f", attn_mask {tuple(attn_mask.shape)}"))
    return Case(drive_tiled, inputs, label=f"{label}; {described}" if label else described, atol=atol,
                rtol=max(atol, 1e-4) if atol > 1e-9 else atol, exact_dtype=exact_dtype)


def partials(q, k, v, allowed, cuts, dtype):
    """Attention over each chunk [a, b) of the keys: its output (zeros if it has no allowed key) and lse.

    Shapes: q (*, T, D), k (*, S, D), v (*, S, Dv), allowed (*, T, S) -> lists of (*, T, Dv) and (*, T)
    """
    q, k, v = q.double(), k.double(), v.double()
    outputs, lses = [], []
    for a, b in zip(cuts, cuts[1:]):
        chunk = allowed[..., a:b]  # (*, T, b - a)
        empty = ~chunk.any(dim=-1)  # (*, T)
        out = F.scaled_dot_product_attention(q, k[..., a:b, :], v[..., a:b, :], attn_mask=chunk)
        scores = q @ k[..., a:b, :].transpose(-2, -1) / math.sqrt(q.shape[-1])  # (*, T, b - a)
        outputs.append(out.masked_fill(empty[..., None], 0.0).to(dtype))
        lses.append(scores.masked_fill(~chunk, float("-inf")).logsumexp(dim=-1).to(dtype))
    return outputs, lses


def merge_case(g, outputs, lses, label, exact_dtype=False):
    atol = max(tolerance(outputs[0].dtype, exact_dtype), 1e-4 if outputs[0].dtype == torch.float32 else 0.0)
    return Case(drive_merge, {"outputs": outputs, "lses": lses}, atol=atol, rtol=atol,
                exact_dtype=exact_dtype,
                label=f"{label}; {len(outputs)} partials, outputs {tuple(outputs[0].shape)} {outputs[0].dtype}, "
                      f"lses {lses[0].dtype}")


# ------------------------------------------------------------------ task 1: the online softmax


def stats_parts(g):
    values = []
    lead, (N,) = ints(g, 1, 4, ints(g, 1, 3)[0]), ints(g, 6, 12)
    x = torch.randn(*lead, N, generator=g).sort(dim=-1).values * 3  # every block raises the maximum
    values.append(stats_case(g, x, ragged_sizes(g, N, 3), "the maximum grows from block to block"))
    for trial in range(10):
        lead, (N,) = ints(g, 1, 4, ints(g, 1, 4)[0]), ints(g, 1, 30)
        dtype = (torch.float32, torch.float64)[trial % 2]
        x = torch.randn(*lead, N, generator=g, dtype=dtype) * (1000.0 if trial % 4 == 0 else 10.0)
        label = "logits in the thousands" if trial % 4 == 0 else "random logits"
        values.append(stats_case(g, x, ragged_sizes(g, N, 6), label))
    masked = []
    for trial in range(6):
        (rows,), (N,) = ints(g, 2, 9), ints(g, 3, 20)
        dtype = (torch.float64, torch.float32)[trial % 2]
        x = torch.randn(rows, N, generator=g, dtype=dtype) * 5
        width = ints(g, 1, N)[0]
        hidden = torch.rand(rows, N, generator=g) < 0.4
        hidden[0] = True  # a fully masked row
        hidden[1, :width] = True  # a row whose first block is fully masked and whose later blocks are not
        hidden[1, -1] = False
        x = x.masked_fill(hidden, float("-inf"))
        sizes = [width] * (N // width) + ([N % width] if N % width else [])
        masked.append(stats_case(g, x, sizes, "row 0 is all -inf, row 1's first block is all -inf"))
    return [
        Part("test_stats", values, **forbidden(STATS_CELLS)),
        Part("test_stats_masked", masked, **forbidden(STATS_CELLS)),
    ]


def online_softmax_parts(g):
    values = []
    for trial in range(10):
        lead, (N,) = ints(g, 1, 4, ints(g, 1, 3)[0]), ints(g, 1, 25)
        dtype = (torch.float32, torch.float64)[trial % 2]
        scale = (1.0, 30.0, 1000.0)[trial % 3]
        x = torch.randn(*lead, N, generator=g, dtype=dtype) * scale
        block = ints(g, 1, N + 4)[0]  # ragged, equal to N, or larger than N
        values.append(softmax_case(g, x, block, "logits in the thousands" if scale == 1000.0 else "random logits"))
    x = torch.randn(3, 7, generator=g, dtype=torch.float64)
    x[0] = float("-inf")
    x[1, :4] = float("-inf")
    values.append(softmax_case(g, x, 2, "row 0 is all -inf (zeros), row 1's first blocks are all -inf"))
    errors = [refused_case("online_softmax", [torch.randn(2, 6, generator=g), 0], ["0"], "online_softmax(x, 0)")]
    for bad in sorted(set(ints(g, -9, 0, 2))):
        errors.append(refused_case("online_softmax", [torch.randn(2, 6, generator=g), bad], [str(bad)],
                                   f"online_softmax(x, {bad})"))
    return [
        Part("test_online_softmax", values, **forbidden(SOFTMAX_CELLS)),
        Part("test_online_softmax_errors", errors, **forbidden(SOFTMAX_CELLS)),
    ]


def stats_dtype_parts(g):
    cases = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        (N,) = ints(g, 8, 24)
        x = (torch.randn(3, 2, N, generator=g) * 6).to(dtype)
        cases.append(stats_case(g, x, ragged_sizes(g, N, 5), f"{dtype} logits give "
                                f"{torch.promote_types(dtype, torch.float32)} statistics", exact_dtype=True))
        cases.append(softmax_case(g, x, ints(g, 1, 6)[0], f"online_softmax keeps {dtype}", exact_dtype=True))
    return [Part("test_online_softmax_dtypes", cases, **forbidden(SOFTMAX_CELLS))]


# ------------------------------------------------------------------ task 2: tiled attention


def tiled_value_parts(g):
    full = [tiled_case(g, *qkv(g, (2, 3), 5, 7, 8, 4), 2, 3, label="T != S, blocks that divide neither")]
    for trial in range(10):
        lead = ints(g, 1, 4, ints(g, 0, 3)[0])
        T, S, D, Dv = ints(g, 1, 20, 4)
        block_q, block_k = ints(g, 1, 9, 2)
        dtype = (torch.float32, torch.float64)[trial % 2]
        full.append(tiled_case(g, *qkv(g, lead, T, S, D, Dv, dtype, key_scale=3.0 if trial % 3 == 0 else 1.0),
                               block_q, block_k))
    (T,), (S,) = ints(g, 2, 7), ints(g, 3, 9)
    full.append(tiled_case(g, *qkv(g, (1,), T, S, 4, dtype=torch.float64), T + 3, S + 5,
                           label="blocks longer than T and S"))
    q, k, v = qkv(g, (1,), 4, 9, 6, dtype=torch.float64)
    rows = torch.tensor([300.0, -300.0, 1.0, 0.0], dtype=torch.float64)[:, None]
    full.append(tiled_case(g, q * rows, k * 5, v, 4, 3, label="queries whose scores lie thousands apart"))
    full.append(tiled_case(g, *qkv(g, (2,), 5, 6, 3, dtype=torch.float64), 1, 1, label="blocks of one"))

    causal = [tiled_case(g, *qkv(g, (2,), 3, 7, 8), 2, 3, True, label="T=3 queries after 4 cached keys")]
    for trial in range(10):
        B, H = ints(g, 1, 4, 2)
        S, D = ints(g, 1, 24, 2)
        T = S if trial % 2 == 0 else ints(g, 1, S + 1)[0]
        block_q, block_k = ints(g, 1, 9, 2)
        dtype = (torch.float32, torch.float64)[trial % 3 == 0]
        causal.append(tiled_case(g, *qkv(g, (B, H), T, S, D, dtype=dtype), block_q, block_k, True))
    for T, S, block_q, block_k in [(4, 12, 4, 4), (5, 13, 3, 4), (1, 9, 1, 4), (3, 9, 8, 2), (6, 16, 4, 4)]:
        causal.append(tiled_case(g, *qkv(g, (2,), T, S, 4, dtype=torch.float64), block_q, block_k, True,
                                 label="the diagonal falls inside a key block"))

    masks = []
    for trial in range(10):
        B, H = ints(g, 1, 4, 2)
        S, D = ints(g, 2, 20, 2)
        T = ints(g, 1, S + 1)[0]
        block_q, block_k = ints(g, 1, 8, 2)
        shape = [(B, H, T, S), (B, 1, 1, S), (T, S), (1, H, T, 1)][trial % 4]
        mask = torch.rand(shape, generator=g) < 0.5
        mask[..., 0, :] = False  # a fully masked row
        dtype = (torch.float32, torch.float64)[trial % 2]
        masks.append(tiled_case(g, *qkv(g, (B, H), T, S, D, dtype=dtype), block_q, block_k, trial % 3 == 0, mask,
                                label="a boolean mask with a fully masked row"))
    S = ints(g, 7, 12)[0]
    lengths = torch.tensor([S, *ints(g, 1, S, 2)])
    keys = (torch.arange(S)[None, :] >= S - lengths[:, None])[:, None, None, :]  # left padding, (B, 1, 1, S)
    masks.append(tiled_case(g, *qkv(g, (3, 2), S, S, 5, dtype=torch.float64), 4, 2, True, keys,
                            label=f"left padding (lengths {lengths.tolist()}): fully masked first key blocks"))
    masks.append(tiled_case(g, *qkv(g, (3, 2), S, S, 5, dtype=torch.float64), 3, 4, False, keys,
                            label=f"left padding (lengths {lengths.tolist()}) without is_causal"))
    T = ints(g, 2, 9)[0]
    masks.append(tiled_case(g, *qkv(g, (2,), T, T + 2, 4, dtype=torch.float64), 3, 4, False,
                            torch.zeros(T, T + 2, dtype=torch.bool), label="nothing allowed at all"))
    return [
        Part("test_tiled_full", full, **forbidden(TILED_CELLS)),
        Part("test_tiled_causal", causal, **forbidden(TILED_CELLS)),
        Part("test_tiled_masks", masks, **forbidden(TILED_CELLS)),
    ]


def tiled_dtype_parts(g):
    cases = []
    for dtype in (torch.float16, torch.bfloat16):
        for trial in range(3):
            B, T, D = ints(g, 1, 10, 3)
            S = T + ints(g, 0, 30)[0]
            block_q, block_k = ints(g, 1, 9, 2)
            keys = torch.rand(B, 1, S, generator=g) < 0.8
            cases.append(tiled_case(g, *qkv(g, (B,), T, S, D, dtype=dtype), block_q, block_k, trial % 2 == 0, keys,
                                    label=f"{dtype}: output in {dtype}, lse in float32", exact_dtype=True))
        big = torch.full((1, 6, 8), 40.0).to(dtype)  # scores 40 * 40 * 8 / sqrt(8) = 4525: exp() overflows
        cases.append(tiled_case(g, big, big, big, 4, 4, label=f"{dtype} scores in the thousands", exact_dtype=True))
    for dtype in (torch.float32, torch.float64):
        (T,), (S,) = ints(g, 2, 9), ints(g, 9, 15)
        cases.append(tiled_case(g, *qkv(g, (2,), T, S, 4, dtype=dtype), 3, 4, True,
                                label=f"{dtype}: output and lse in {dtype}", exact_dtype=True))
    return [Part("test_tiled_low_precision", cases, **forbidden(TILED_CELLS))]


def tiled_rule_parts(g):
    skips = []
    for T, cached, widest in ((64, 0, 32), (48, 32, 16)):
        (block,), (more,) = ints(g, 16, widest + 1), ints(g, 0, 16)
        T, S = T + more, T + more + cached + (ints(g, 1, 16)[0] if cached else 0)
        q, k, v = qkv(g, (1, 2), T, S, 16)
        skips.append(Case(drive_skipped_blocks, {"q": q, "k": k, "v": v, "block": block}, exact_dtype=False,
                          label=f"T={T}, S={S}, block_q = block_k = {block}: with is_causal=True compute only the "
                                "key blocks that hold a key some query of the block may see"))
    memory = []
    for is_causal in (False, True):
        T, (block,) = 64 + ints(g, 0, 17)[0], ints(g, 16, 33)
        S = 4 * (256 + ints(g, 0, 65)[0])
        q, k, v = qkv(g, (1,), T, S, 16)
        memory.append(Case(drive_memory, {"q": q, "k": k, "v": v, "block": block, "is_causal": is_causal},
                           label=f"T={T}, S={S // 4} then S={S}, blocks of {block}, is_causal={is_causal}: keep one "
                                 "(block_q, block_k) tile of scores at a time and build masks block by block; the "
                                 f"peak must stay below {T * S} bytes, the size of a (T, S) boolean mask"))
    q = torch.randn(1, 4, 8, generator=g)
    errors = []
    for block_q, block_k in ((0, 2), (2, 0), (ints(g, -9, 0)[0], 3), (3, ints(g, -9, 0)[0])):
        bad = str(block_q if block_q < 1 else block_k)
        errors.append(refused_case("tiled_attention", [q, q, q, block_q, block_k], [bad],
                                   f"tiled_attention(q, k, v, block_q={block_q}, block_k={block_k})"))
    T, S = ints(g, 20, 40)[0], ints(g, 5, 20)[0]
    errors.append(refused_case("tiled_attention", [torch.randn(1, T, 8, generator=g), torch.randn(1, S, 8, generator=g),
                                                   torch.randn(1, S, 8, generator=g), 4, 4], [f"{T}", f"{S}"],
                               f"is_causal=True with T={T} queries and S={S} keys", is_causal=True))
    views = []
    for dtype, is_causal in ((torch.float32, True), (torch.float16, True), (torch.float64, False)):
        B, T, H, D = ints(g, 2, 7, 4)
        inputs = {"q": torch.randn(B, T, H, D, generator=g).to(dtype), "k": torch.randn(B, T, H, D, generator=g).to(dtype),
                  "v": torch.randn(B, T, H, D, generator=g).to(dtype), "block_q": ints(g, 1, 5)[0],
                  "block_k": ints(g, 1, 5)[0], "is_causal": is_causal,
                  "attn_mask": torch.ones(B, 1, T, T, dtype=torch.bool)}  # it must not change either
        atol = tolerance(dtype)
        views.append(Case(drive_tiled_transposed, inputs, exact_dtype=False, atol=atol, rtol=max(atol, 1e-4),
                          label=f"non-contiguous (transposed) q, k, v of shape ({B}, {H}, {T}, {D}), {dtype}, "
                                "called twice; the inputs must not change"))
    return [
        Part("test_tiled_skips_blocks", skips, **forbidden(TILED_CELLS)),
        Part("test_tiled_memory", memory, **forbidden(TILED_CELLS)),
        Part("test_tiled_errors", errors, **forbidden(TILED_CELLS)),
        Part("test_tiled_inputs_unchanged", views, **forbidden(TILED_CELLS)),
    ]


# ------------------------------------------------------------------ task 3: merging partial results


def random_cuts(g, S, most):
    inner = ints(g, 1, S, ints(g, 1, most)[0]) if S > 1 else []
    return sorted({0, S, *inner})


def merge_parts(g):
    values = []
    q, k, v = qkv(g, (1,), 1, 5, 8, dtype=torch.float64)
    allowed = torch.ones(1, 1, 5, dtype=torch.bool)
    values.append(merge_case(g, *partials(q, k, v, allowed, [0, 3, 5], torch.float64), "two partials over 3 + 2 keys"))
    for trial in range(8):
        B, T, D = ints(g, 1, 5, 3)
        S = ints(g, 2, 30)[0]
        cuts = random_cuts(g, S, 5)
        dtype = (torch.float32, torch.float64)[trial % 2]
        scale = (1.0, 40.0, 400.0)[trial % 3]
        q, k, v = qkv(g, (B,), T, S, D, key_scale=scale, dtype=torch.float64)
        keys = torch.rand(B, 1, S, generator=g) < 0.7
        keys[0] = False  # batch row 0 has no allowed key in any chunk
        keys[-1, :, cuts[1]:] = True
        label = ("lse_i in the hundreds: exp(lse_i) overflows" if scale > 1 else "random partials") + \
            ", batch row 0 empty in every partial"
        values.append(merge_case(g, *partials(q, k, v, keys.expand(B, T, S), cuts, dtype), label))
    outputs = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64)]
    values.append(merge_case(g, outputs, [torch.randn(2, 3, generator=g, dtype=torch.float64) * 3],
                             "a single partial is already the whole"))
    dtypes = []
    for out_dtype, lse_dtype in ((torch.float16, torch.float16), (torch.float16, torch.float32),
                                 (torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                                 (torch.float64, torch.float64)):
        (n,), (B, T, Dv) = ints(g, 2, 5), ints(g, 1, 4, 3)
        outputs = [torch.randn(B, T, Dv, generator=g).to(out_dtype) for _ in range(n)]
        lses = [(torch.randn(B, T, generator=g) * 3).to(lse_dtype) for _ in range(n)]
        dtypes.append(merge_case(g, outputs, lses, f"{out_dtype} outputs stay {out_dtype}, lse in "
                                 f"{torch.promote_types(out_dtype, torch.float32)}", exact_dtype=True))
    split = []
    for trial in range(5):
        B, H = ints(g, 1, 4, 2)
        S = ints(g, 1, 90)[0]
        split_size = ints(g, 1, 40)[0]
        q, k, v = qkv(g, (B, H), 1, S, 8, dtype=torch.float64)
        keys = torch.rand(B, 1, 1, S, generator=g) < 0.8
        keys[0] = False
        split.append(Case(drive_split_k, {"q": q, "k": k, "v": v, "split_size": split_size, "block_q": 16,
                                          "attn_mask": keys}, exact_dtype=False, atol=1e-5, rtol=1e-5,
                          label=f"one query, S={S} keys in chunks of {split_size}, batch row 0 has no allowed key"))
    T, S = ints(g, 2, 5)[0], ints(g, 200, 400)[0]
    q, k, v = qkv(g, (3,), T, S, 16, dtype=torch.float16)
    split.append(Case(drive_split_k, {"q": q, "k": k, "v": v, "split_size": 64, "block_q": 16}, exact_dtype=False,
                      atol=2e-3, rtol=2e-3, label=f"float16, T={T} queries, S={S} keys in chunks of 64"))
    return [
        Part("test_merge", values, **forbidden(MERGE_CELLS)),
        Part("test_merge_dtypes", dtypes, **forbidden(MERGE_CELLS)),
        Part("test_split_k", split, **forbidden(("tiled_attention", "merge_partials"))),
    ]


def library_parts(g):
    q, k, v = qkv(g, (2,), 5, 7, 4)
    inputs = {"x": torch.randn(2, 7, generator=g), "q": q, "k": k, "v": v,
              "attn_mask": torch.rand(2, 1, 7, generator=g) < 0.7}
    case = Case(drive_everything, inputs, exact_dtype=False, atol=2e-3, rtol=2e-3,
                label="each of your answers once, with torch's softmax and attention and attnlab.flash forbidden")
    return [Part("test_no_library_calls", [case], **forbidden(ALL_CELLS))]


def parts(generator):
    g = generator
    return (stats_parts(g) + online_softmax_parts(g) + stats_dtype_parts(g) + tiled_value_parts(g)
            + tiled_dtype_parts(g) + tiled_rule_parts(g) + merge_parts(g) + library_parts(g))
