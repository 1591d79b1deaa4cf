"""Benchmark for chapter 8: time and peak memory of naive, tiled and PyTorch's fused attention.

Prints two tables (and writes their numbers as JSON with ``--json PATH``):

1. prefill, causal, ``T = S``: ``naive`` (``attnlab.scaled_dot_product_attention``
   with ``attnlab.causal_mask``: builds the ``(T, S)`` scores and weights),
   ``tiled`` (``attnlab.tiled_attention``: the Python loop over blocks) and
   ``sdpa`` (``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``,
   PyTorch's fused kernel);
2. decoding, one query against ``S`` cached keys: ``naive``, ``split_k``
   (``attnlab.split_k_attention``, flash-decoding's chunks merged by log-sum-exp)
   and ``sdpa``.

Time: the median and the fastest of at least ``--reps`` repetitions (more for short
calls, up to 60, until each version has run for about half a second; on a shared
machine the fastest run is the one least disturbed by others), the three timed back to back in each
repetition (the order rotates), under ``torch.inference_mode``; ratios are
against ``sdpa`` measured in the same run. Memory: the peak allocated during one
call, above what was allocated before it (``attnlab.memory.peak_allocated_bytes``:
PyTorch's profiler on the CPU, the CUDA allocator's statistics on a GPU); it is
measured in a separate call, because the profiler slows the CPU down. Run from
the repository root::

    python benchmarks/flash_attention.py            # about 1-2 minutes on 2 CPU cores (one thread)
    python benchmarks/flash_attention.py --quick    # about 15 s
    python benchmarks/flash_attention.py --json book/data/flash_attention_benchmark.json
    python benchmarks/flash_attention.py --device cuda --lengths 1024 4096 16384 --dtype float16
"""

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from attnlab.attention import scaled_dot_product_attention
from attnlab.flash import split_k_attention, tiled_attention
from attnlab.masks import causal_mask
from attnlab.memory import peak_allocated_bytes

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~15 s): fewer, shorter lengths")
    parser.add_argument("--lengths", type=int, nargs="+", help="prefill lengths T = S (default 256 ... 4096)")
    parser.add_argument("--contexts", type=int, nargs="+", help="decode context lengths S (default 1024 ... 65536)")
    parser.add_argument("--reps", type=int, help="least timed repetitions per size (default 5, quick 3)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=128, help="block_q = block_k of the tiled version")
    parser.add_argument("--split", type=int, default=1024, help="keys per chunk of the split-K version")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads on the CPU (default 1: steady medians on a shared 2-core machine; "
        "0 keeps torch's default)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    args = parser.parse_args()
    if args.lengths is None:
        args.lengths = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    if args.contexts is None:
        args.contexts = [1024, 4096] if args.quick else [1024, 4096, 16384, 65536]
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    return args


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on an accelerator (a no-op on the CPU)."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(runs: dict, device: torch.device, reps: int, min_seconds: float = 0.5, max_reps: int = 60) -> dict:
    """Median seconds and peak bytes of each run; the runs are timed back to back, order rotating.

    Short calls get more repetitions (up to ``max_reps``, until each run has had about
    ``min_seconds``), so that a load spike on a shared machine cannot move the median.
    """
    names = list(runs)
    for fn in runs.values():  # warm up every shape once
        fn()
    slowest = max(timed(fn, device) for fn in runs.values())
    reps = max(reps, min(max_reps, math.ceil(min_seconds / max(slowest, 1e-6))))
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            times[name].append(timed(runs[name], device))
    peaks = {name: peak_allocated_bytes(fn, device)[1] for name, fn in runs.items()}
    return {
        "seconds": {n: statistics.median(t) for n, t in times.items()},
        "best_seconds": {n: min(t) for n, t in times.items()},
        "peak_bytes": peaks,
        "reps": reps,
    }


def prefill(args, device, dtype) -> list[dict]:
    rows = []
    for length in args.lengths:
        shape = (args.batch, args.heads, length, args.head_dim)  # (B, H, T, D), T = S
        q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
        mask = causal_mask(length, length, device=device)  # (T, S)
        runs = {
            "naive": lambda: scaled_dot_product_attention(q, k, v, attn_mask=mask)[0],
            "tiled": lambda: tiled_attention(q, k, v, is_causal=True, block_q=args.block, block_k=args.block)[0],
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        }
        row = {"length": length, **measure(runs, device, args.reps)}
        reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
        row["max_abs_error"] = {name: (fn().double() - reference).abs().max().item() for name, fn in runs.items()}
        rows.append(row)
        print_row("prefill T=S", length, row)
    return rows


def decode(args, device, dtype) -> list[dict]:
    rows = []
    for context in args.contexts:
        q = torch.randn(args.batch, args.heads, 1, args.head_dim, device=device, dtype=dtype)  # (B, H, 1, D)
        k, v = (torch.randn(args.batch, args.heads, context, args.head_dim, device=device, dtype=dtype) for _ in range(2))
        runs = {
            "naive": lambda: scaled_dot_product_attention(q, k, v)[0],
            "split_k": lambda: split_k_attention(q, k, v, split_size=args.split)[0],
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        }
        row = {"context": context, **measure(runs, device, args.reps)}
        rows.append(row)
        print_row("decode S", context, row)
    return rows


def print_row(label: str, size: int, row: dict) -> None:
    seconds, best, peaks = row["seconds"], row["best_seconds"], row["peak_bytes"]
    cells = "  ".join(
        f"{name} {1e3 * t:9.2f} ms (best {1e3 * best[name]:9.2f}, {best[name] / best['sdpa']:5.1f}x sdpa) "
        f"{peaks[name] / 2**20:8.2f} MiB"
        for name, t in seconds.items()
    )
    print(f"{label}={size:>6}:  {cells}", flush=True)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    threads = torch.get_num_threads()
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device {device}, {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"B={args.batch} H={args.heads} D={args.head_dim}, block {args.block}, split {args.split}")
    try:
        with torch.inference_mode():
            results = {
                "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                "device_type": device.type,
                "platform": platform.machine(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "shape": {"B": args.batch, "H": args.heads, "D": args.head_dim},
                "block": args.block,
                "split": args.split,
                "reps": args.reps,
                "prefill": prefill(args, device, dtype),
                "decode": decode(args, device, dtype),
            }
    finally:
        torch.set_num_threads(threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
