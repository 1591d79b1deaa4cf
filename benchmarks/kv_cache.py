"""Benchmark for chapter 7: what a KV cache buys, and what it costs.

Prints three tables (and writes their numbers as JSON with ``--json PATH``):

1. time per generated token vs context length, without and with a KV cache,
   and the speed-up;
2. the preallocated cache (``attnlab.cache.KVCache``) vs one that grows by
   ``torch.cat`` (``ConcatKVCache``): the cache update alone and a whole decode
   step, at each context length;
3. cache memory for multi-head, grouped-query and multi-query attention,
   read from the cache objects' ``nbytes`` (a Llama-3-8B-sized row is measured
   on PyTorch's ``meta`` device, which allocates nothing).

Baseline and candidate are timed back to back inside each repetition, under
``torch.inference_mode``, and the tables report medians. Run from the
repository root::

    python benchmarks/kv_cache.py            # about 25 s on 2 CPU cores (one thread)
    python benchmarks/kv_cache.py --quick    # about 5 s
    python benchmarks/kv_cache.py --json kv_cache.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

from attnlab.cache import ConcatKVCache, KVCache, cache_nbytes
from attnlab.llama import LlamaConfig, LlamaLM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~10 s): fewer, shorter contexts")
    parser.add_argument("--lengths", type=int, nargs="+", help="context lengths (default 64 128 256 512 1024)")
    parser.add_argument("--steps", type=int, help="decode steps timed per length (default 9, quick 5)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: = heads, MHA)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads on the CPU (default 1: steady medians on a shared 2-core machine; "
        "0 keeps torch's default)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time (default) or this process's CPU time, steadier on a shared "
                        "machine (CPU only, one thread)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    args = parser.parse_args()
    if args.lengths is None:
        args.lengths = [64, 256, 512] if args.quick else [64, 128, 256, 512, 1024]
    if args.steps is None:
        args.steps = 5 if args.quick else 9
    return args


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on an accelerator (a no-op on the CPU)."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU time


def timed(fn, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = CLOCK()
    result = fn()
    synchronize(device)
    return CLOCK() - start, result


def decode_timings(model: LlamaLM, length: int, steps: int, batch: int) -> dict:
    """Median seconds per generated token at ``length`` context: no cache, KVCache, ConcatKVCache.

    Each repetition times one uncached step and one step with each cache, back to back,
    in an order that rotates from one repetition to the next.
    """
    vocab, device = model.config.vocab_size, model.lm_head.weight.device
    prompt = torch.randint(3, vocab, (batch, length), device=device)  # (B, L)
    capacity = length + steps + 1
    caches = {cls: model.new_caches(batch, capacity, cache_cls=cls) for cls in (KVCache, ConcatKVCache)}
    for cls, layer_caches in caches.items():  # prefill (not timed)
        model(prompt, caches=layer_caches)
    sequence = prompt
    times = {"none": [], "prealloc": [], "concat": []}
    for step in range(steps + 1):  # step 0 warms up this shape and is not counted
        token = torch.randint(3, vocab, (batch, 1), device=device)  # (B, 1) the token just generated
        sequence = torch.cat([sequence, token], dim=1)  # (B, S)
        runs = [
            ("none", lambda: model(sequence)[:, -1]),  # no cache: the whole sequence again
            ("prealloc", lambda: model(token, caches=caches[KVCache])[:, -1]),
            ("concat", lambda: model(token, caches=caches[ConcatKVCache])[:, -1]),
        ]
        for name, run in runs[step % 3:] + runs[: step % 3]:
            t, _ = timed(run, device)
            times[name].append(t)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def update_timings(model: LlamaLM, length: int, reps: int, batch: int) -> dict:
    """Median seconds of the cache updates alone (all layers, one token) at ``length`` cached positions."""
    config, device = model.config, model.lm_head.weight.device
    shape = (batch, config.n_kv_heads, 1, config.head_dim)  # (B, Hkv, 1, D)
    full = (batch, config.n_kv_heads, length, config.head_dim)  # (B, Hkv, L, D)
    caches = {cls: model.new_caches(batch, length + reps, cache_cls=cls) for cls in (KVCache, ConcatKVCache)}
    for layer_caches in caches.values():
        for cache in layer_caches:
            cache.update(torch.randn(full, device=device), torch.randn(full, device=device))
    k, v = torch.randn(shape, device=device), torch.randn(shape, device=device)
    times = {"prealloc": [], "concat": []}
    for rep in range(reps):
        order = (("prealloc", KVCache), ("concat", ConcatKVCache))
        for name, cls in order if rep % 2 == 0 else order[::-1]:
            t, _ = timed(lambda: [cache.update(k, v) for cache in caches[cls]], device)
            times[name].append(t)
    return {name: statistics.median(values) for name, values in times.items()}


def memory_rows(args: argparse.Namespace, capacity: int) -> list[dict]:
    """Cache bytes for MHA, GQA and MQA, measured from the cache objects."""
    rows = []
    heads = args.heads
    for label, n_kv in (("MHA", heads), ("GQA", max(1, heads // 4)), ("MQA", 1)):
        config = LlamaConfig(
            vocab_size=256, d_model=args.d_model, n_layers=args.layers, n_heads=heads, n_kv_heads=n_kv,
            max_seq_len=capacity,
        )
        caches = LlamaLM(config, device="meta").new_caches(args.batch, capacity)  # meta: no real weights needed
        rows.append(dict(model="benchmark model (float32)", kind=label, n_heads=heads, n_kv_heads=n_kv,
                         n_layers=args.layers, head_dim=config.head_dim, capacity=capacity,
                         batch=args.batch, bytes=cache_nbytes(caches)))
    # Llama-3-8B's shape (32 layers, 32 query heads, D = 128, 8 key/value heads), bfloat16,
    # 8192 positions: measured on the meta device, which allocates nothing.
    for label, n_kv in (("MHA", 32), ("GQA", 8), ("MQA", 1)):
        caches = [
            KVCache(batch_size=1, n_kv_heads=n_kv, capacity=8192, head_dim=128, dtype=torch.bfloat16, device="meta")
            for _ in range(32)
        ]
        rows.append(dict(model="Llama-3-8B shape (bfloat16)", kind=label, n_heads=32, n_kv_heads=n_kv,
                         n_layers=32, head_dim=128, capacity=8192, batch=1, bytes=cache_nbytes(caches)))
    return rows


def describe(device: torch.device) -> str:
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def human(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{n_bytes} B"
        n_bytes /= 1024
    return ""


def main() -> None:
    global CLOCK
    args = parse_args()
    if args.threads < 0:
        raise SystemExit(f"--threads must be >= 0, got {args.threads}")
    if args.clock == "cpu":
        if args.device != "cpu" or args.threads != 1:
            raise SystemExit("--clock cpu needs --device cpu and --threads 1 (CPU time adds up every thread)")
        CLOCK = time.process_time
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    max_len = max(args.lengths) + 5 * args.steps  # room for the update-only timings
    config = LlamaConfig(
        vocab_size=256, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        n_kv_heads=args.kv_heads, max_seq_len=max_len,
    )
    device = torch.device(args.device)
    model = LlamaLM(config, device=device).eval()
    started = time.perf_counter()
    print(f"model: d_model={config.d_model} n_layers={config.n_layers} H={config.n_heads} "
          f"Hkv={config.n_kv_heads} D={config.head_dim} ffn={config.ffn_hidden} float32; batch {args.batch}; "
          f"torch {torch.__version__}, device {describe(device)}")
    print(f"medians of {args.steps} decode steps per length ({args.clock} clock); baseline and candidate "
          f"timed back to back\n")

    decode, updates = [], []
    with torch.inference_mode():
        for length in args.lengths:
            decode.append(dict(context=length, **decode_timings(model, length, args.steps, args.batch)))
            updates.append(dict(context=length, **update_timings(model, length, 5 * args.steps, args.batch)))

    print("1. time per generated token vs context length")
    print(f"{'context':>8} {'no cache ms':>12} {'KV cache ms':>12} {'speed-up':>9}")
    for row in decode:
        row["speedup"] = row["none"] / row["prealloc"]
        print(f"{row['context']:>8} {1e3 * row['none']:>12.2f} {1e3 * row['prealloc']:>12.2f} {row['speedup']:>8.1f}x")

    print("\n2. preallocated vs concatenation cache")
    print(f"{'context':>8} {'update: prealloc us':>20} {'concat us':>10} {'ratio':>6}   "
          f"{'step: prealloc ms':>18} {'concat ms':>10} {'ratio':>6}")
    for row, upd in zip(decode, updates):
        upd["ratio"] = upd["concat"] / upd["prealloc"]
        row["concat_ratio"] = row["concat"] / row["prealloc"]
        print(f"{row['context']:>8} {1e6 * upd['prealloc']:>20.1f} {1e6 * upd['concat']:>10.1f} {upd['ratio']:>5.1f}x   "
              f"{1e3 * row['prealloc']:>18.2f} {1e3 * row['concat']:>10.2f} {row['concat_ratio']:>5.2f}x")

    memory = memory_rows(args, max(args.lengths))
    print("\n3. KV cache memory (from the caches' nbytes)")
    print(f"{'model':<28} {'kind':<4} {'H':>3} {'Hkv':>4} {'positions':>9} {'bytes':>14} {'':>10} {'vs MHA':>7}")
    for row in memory:
        mha = next(r for r in memory if r["model"] == row["model"] and r["kind"] == "MHA")
        row["fraction_of_mha"] = row["bytes"] / mha["bytes"]
        print(f"{row['model']:<28} {row['kind']:<4} {row['n_heads']:>3} {row['n_kv_heads']:>4} {row['capacity']:>9} "
              f"{row['bytes']:>14,} {human(row['bytes']):>10} {row['fraction_of_mha']:>7.3f}")

    elapsed = time.perf_counter() - started
    print(f"\ntotal {elapsed:.1f} s")
    if args.json:
        report = dict(
            model=dict(d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                       n_kv_heads=config.n_kv_heads, head_dim=config.head_dim, ffn_hidden=config.ffn_hidden,
                       dtype="float32", batch=args.batch),
            torch=torch.__version__, device=describe(device), steps=args.steps, clock=args.clock,
            load_average=os.getloadavg(),
            seconds_per_token=decode, cache_update_seconds=updates, memory=memory, elapsed_s=elapsed,
        )
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
