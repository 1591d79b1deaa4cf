"""Benchmark for chapter 7: attnlab's Llama decoder against Hugging Face ``transformers``.

One process, the same weights (``LlamaLM.from_hf`` copies a random
``LlamaForCausalLM``), the same dtype, greedy decoding checked token for token.
Every candidate of a comparison runs once per repetition, in an order that
rotates, so a load spike on a shared machine hits all of them; the tables give
the minimum and the median over the repetitions and the ratios of the
minimums. Hugging Face runs with its default ``generate`` settings (dynamic
cache, SDPA attention) and, as the fair counterpart of a preallocated cache,
with ``cache_implementation="static"`` (which ``transformers`` compiles by
itself on a GPU, not on the CPU).

Sections (``--only`` picks some):

* ``small``: hidden 256, 4 layers, 8/2 heads, MLP 1024, vocabulary 256; batch 4,
  32-token prompt, 256 new tokens; with and without a cache.
* ``large``: hidden 1024, 8 layers, 16/4 heads, MLP 4096, vocabulary 32000;
  batch 1 and 8, 32-token prompt, 128 new tokens; against the memory-bandwidth
  bound (weight bytes read per decode step over the copy bandwidth measured in
  this run).
* ``ttft``: time to the first token of a 1024-token prompt (small and large).
* ``attention``: causal attention alone, T = 256 ... 4096, against
  ``F.scaled_dot_product_attention``; ``decode``: one query against S = 1024
  grouped keys, against ``enable_gqa=True``.
* ``memory``: peak memory growth of one generation (large, batch 8), tensors
  only (CPU: PyTorch's profiler allocation events; CUDA: the allocator's peak).

Run from the repository root::

    python benchmarks/vs_hf.py --quick                 # ~1 minute, smaller sizes
    python benchmarks/vs_hf.py --json book/data/vs_hf_cpu.json
    python benchmarks/vs_hf.py --device cuda --json vs_hf_cuda.json
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

import attnlab
from attnlab.attention import fast_attention, scaled_dot_product_attention, sdpa
from attnlab.generation import generate
from attnlab.heads import repeat_kv
from attnlab.llama import LlamaLM

SMALL = dict(vocab_size=256, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=2)
LARGE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
             num_attention_heads=16, num_key_value_heads=4)
SECTIONS = ("bandwidth", "small", "large", "ttft", "attention", "decode", "memory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (~1 min)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--dtype", default=None,
                        help="dtype of the large model (default float32 on cpu, bfloat16 on cuda); small is float32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on the CPU (0: torch's default)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per comparison (default 5, quick 2)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what the tables and ratios use: wall-clock time (default) or this process's CPU "
                        "time, steadier on a shared machine (CPU only, with --threads 1); both are in the JSON")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time generate(compiled=True) (default: on, off with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH")
    args = parser.parse_args()
    args.reps = args.reps or (2 if args.quick else 5)
    args.sections = args.only or list(SECTIONS)
    if args.compile is None:
        args.compile = not args.quick
    return args


# ------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


CLOCK = "wall"  # set by --clock: "wall" (perf_counter) or "cpu" (this process's CPU time)


def interleaved(candidates: dict[str, Callable[[], object]], reps: int, device: torch.device) -> dict:
    """Seconds per call of each candidate, ``reps`` rounds, the order rotating each round.

    Both clocks are read: the wall clock and this process's CPU time (which a busy machine
    inflates far less: time spent waiting for a core is not counted). ``"min"``, ``"median"``
    and ``"all"`` are those of ``CLOCK``; ``"wall_*"`` and ``"cpu_*"`` keep both.
    Returns ``{name: {...}}``; one untimed warm-up call each first.
    """
    names = list(candidates)
    for name in names:
        candidates[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    results = {}
    for name in names:
        row = {f"{clock}_{stat}": fn(values[name]) for clock, values in (("wall", wall), ("cpu", cpu))
               for stat, fn in (("min", min), ("median", statistics.median), ("all", list))}
        row.update(min=row[f"{CLOCK}_min"], median=row[f"{CLOCK}_median"], all=row[f"{CLOCK}_all"])
        results[name] = row
    return results


def print_table(title: str, rows: list[tuple[str, dict]], unit: str, per_call: float = 1.0,
                baseline: str | None = None) -> None:
    """``rows``: (name, timing); prints min and median as ``unit`` (``tok/s`` or ``ms``) and ratios."""
    print(f"\n{title}")
    base = dict(rows)[baseline]["min"] if baseline else None
    for name, t in rows:
        if unit == "tok/s":
            best, mid = per_call / t["min"], per_call / t["median"]
            ratio = f"{base / t['min']:6.2f}x" if base else ""  # higher throughput = faster
        else:
            best, mid = 1e3 * t["min"], 1e3 * t["median"]
            ratio = f"{t['min'] / base:6.2f}x" if base else ""  # time relative to the baseline
        print(f"  {name:<42} min {best:10.2f} {unit:<6} median {mid:10.2f} {unit:<6} {ratio}")


# ------------------------------------------------------------------ machine
def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from ``/proc/cpuinfo``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu_name = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu_name = names[0] if names else cpu_name
    return cpu_name


def copy_bandwidth(device: torch.device, mib: int, reps: int) -> float:
    """Bytes per second of ``dst.copy_(src)``, counting the read and the write (STREAM's copy)."""
    n = mib * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    t = interleaved({"copy": lambda: dst.copy_(src)}, max(reps, 5), device)["copy"]["min"]
    return 2 * src.nbytes / t


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of one ``n x n`` matrix product (2 n^3 FLOPs): the machine's compute roof, roughly."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = interleaved({"mm": lambda: a @ b}, max(reps, 5), device)["mm"]["min"]
    return 2 * n**3 / t


def weight_bytes_per_step(model: LlamaLM, batch: int) -> int:
    """Bytes of weights one decode step must read: every matrix but the embedding (B rows of it)."""
    total = sum(p.nbytes for name, p in model.named_parameters() if not name.startswith("embed_tokens"))
    embed = model.embed_tokens.weight
    if model.config.tie_word_embeddings:
        total += embed.nbytes  # the LM head reads it whole
    return total + batch * embed.shape[1] * embed.element_size()


def decode_flops_per_step(model: LlamaLM, batch: int) -> int:
    """2 FLOPs per weight and token of the matrix products (attention over the cache ignored)."""
    weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and not name.startswith("embed"))
    return 2 * batch * weights


def peak_memory_growth(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensors allocated during ``fn()`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation:
            changes.append((event.start_time_ns, event.extra_fields.alloc_size))
    current = peak = 0
    for _, size in sorted(changes):
        current += size
        peak = max(peak, current)
    return peak


# ------------------------------------------------------------------ models
def model_pair(sizes: dict, max_positions: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random ``LlamaForCausalLM`` (weights scaled so that greedy tokens are well separated) and its copy."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**sizes, max_position_embeddings=max_positions, bos_token_id=None,
                                      eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # std 0.02 (HF's init) makes near-ties in the logits; 1/sqrt(fan_in) does not
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif "embed" in name:
                param.normal_(0.0, 1.0)
            else:
                param.normal_(0.0, param.shape[1] ** -0.5)
    hf = hf.to(device=device, dtype=dtype)
    ours = LlamaLM.from_hf(config, hf.state_dict())
    return hf, ours


def hf_generate(hf, ids, new: int, **kwargs):
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                      min_new_tokens=new, do_sample=False, pad_token_id=0, **kwargs)
    return out[:, ids.shape[1]:]


def generation_section(name, sizes, batches, prompt, new, args, device, dtype, results, uncached=False):
    with torch.inference_mode():
        hf, ours = model_pair(sizes, prompt + new, device, dtype)
        bound = None
        if "bandwidth" in results:
            bandwidth = results["bandwidth"]["copy_bytes_per_s"]
        for batch in batches:
            ids = torch.randint(1, sizes["vocab_size"], (batch, prompt), device=device)
            candidates = {
                "hf generate (dynamic cache)": lambda: hf_generate(hf, ids, new),
                "hf generate (static cache)": lambda: hf_generate(hf, ids, new, cache_implementation="static"),
                "attnlab generate": lambda: generate(ours, ids, None, new),
            }
            if args.compile:
                start = time.perf_counter()
                generate(ours, ids, None, new, compiled=True)  # compiles the decode step for these shapes
                compile_seconds = time.perf_counter() - start
                candidates["attnlab generate (compiled, static cache)"] = lambda: generate(
                    ours, ids, None, new, compiled=True)
            if uncached:
                candidates["hf generate, no cache"] = lambda: hf_generate(hf, ids, new, use_cache=False)
                candidates["attnlab generate, no cache"] = lambda: generate(ours, ids, None, new, use_cache=False)
            tokens = {key: fn() for key, fn in candidates.items()}
            same = {key: bool(torch.equal(t, tokens["hf generate (dynamic cache)"])) for key, t in tokens.items()}
            timing = interleaved(candidates, args.reps, device)
            key = f"{name}_batch{batch}"
            title = f"{name} config, batch {batch}, {prompt}-token prompt, {new} new tokens ({dtype})"
            print_table(title, list(timing.items()), "tok/s", batch * new, "hf generate (dynamic cache)")
            row = {"batch": batch, "prompt": prompt, "new_tokens": new, "dtype": str(dtype).removeprefix("torch."),
                   "same_tokens_as_hf": same,
                   "tokens_per_s": {k: batch * new / t["min"] for k, t in timing.items()},
                   "tokens_per_s_median": {k: batch * new / t["median"] for k, t in timing.items()},
                   "tokens_per_s_wall": {k: batch * new / t["wall_min"] for k, t in timing.items()},
                   "tokens_per_s_cpu": {k: batch * new / t["cpu_min"] for k, t in timing.items()},
                   "seconds": timing}
            if args.compile:
                row["compile_seconds"] = compile_seconds
                print(f"  (compiling the decode step took {compile_seconds:.0f} s, once, outside the timings)")
            hf_base = timing["hf generate (dynamic cache)"]["min"]
            row["speedup_vs_hf"] = {k: hf_base / t["min"] for k, t in timing.items()}
            row["speedup_vs_hf_wall"] = {k: timing["hf generate (dynamic cache)"]["wall_min"] / t["wall_min"]
                                         for k, t in timing.items()}
            row["speedup_vs_hf_static"] = timing["hf generate (static cache)"]["min"] / timing["attnlab generate"]["min"]
            if "bandwidth" in results:
                weight_bytes = weight_bytes_per_step(ours, batch)
                bound = batch * bandwidth / weight_bytes  # tokens/s if every step only read the weights once
                ours_rate = max(rate for key, rate in row["tokens_per_s"].items()
                                if key.startswith("attnlab generate") and "no cache" not in key)
                row.update(weight_bytes_per_step=weight_bytes, bandwidth_bound_tokens_per_s=bound,
                           fraction_of_bound=ours_rate / bound,
                           flops_per_step=decode_flops_per_step(ours, batch))
                print(f"  bandwidth bound {bound:.1f} tok/s ({weight_bytes / 2**20:.0f} MiB of weights per step "
                      f"at {bandwidth / 1e9:.1f} GB/s): attnlab's best reaches {100 * ours_rate / bound:.0f}%")
            if not all(same.values()):
                print(f"  WARNING: greedy tokens differ from Hugging Face's: {same}")
            results[key] = row


def ttft_section(args, device, dtype_large, results):
    prompt = 256 if args.quick else 1024
    for name, sizes, dtype in (("small", SMALL, torch.float32), ("large", LARGE, dtype_large)):
        with torch.inference_mode():
            hf, ours = model_pair(sizes, prompt + 1, device, dtype)
            ids = torch.randint(1, sizes["vocab_size"], (1, prompt), device=device)
            candidates = {"hf generate (dynamic cache)": lambda: hf_generate(hf, ids, 1),
                          "attnlab generate": lambda: generate(ours, ids, None, 1)}
            same = bool(torch.equal(*(fn() for fn in candidates.values())))
            timing = interleaved(candidates, args.reps, device)
        print_table(f"time to first token, {name} config, {prompt}-token prompt", list(timing.items()), "ms",
                    baseline="hf generate (dynamic cache)")
        results[f"ttft_{name}"] = {"prompt": prompt, "seconds": timing, "same_tokens_as_hf": same,
                                   "ratio_to_hf": timing["attnlab generate"]["min"]
                                   / timing["hf generate (dynamic cache)"]["min"],
                                   "ratio_to_hf_wall": timing["attnlab generate"]["wall_min"]
                                   / timing["hf generate (dynamic cache)"]["wall_min"]}


def attention_section(args, device, dtype, results):
    B, H, Hkv, D = 1, 16, 4, 64
    lengths = [256, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    rows = []
    with torch.inference_mode():
        for T in lengths:
            q = torch.randn(B, H, T, D, device=device, dtype=dtype)
            k = torch.randn(B, H, T, D, device=device, dtype=dtype)
            v = torch.randn(B, H, T, D, device=device, dtype=dtype)
            candidates = {
                "F.scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                "attnlab fast_attention": lambda: fast_attention(q, k, v, causal=True),
            }
            if T <= 1024:  # the teaching version materialises (B, H, T, T) weights, several times
                mask = attnlab.causal_mask(T, device=device)
                candidates["attnlab teaching attention"] = lambda: scaled_dot_product_attention(q, k, v, mask)
            timing = interleaved(candidates, max(10, 4 * args.reps) if T <= 1024 else args.reps * 2, device)
            print_table(f"causal attention alone, B={B}, H={H}, D={D}, T=S={T} ({dtype})", list(timing.items()),
                        "ms", baseline="F.scaled_dot_product_attention")
            base = timing["F.scaled_dot_product_attention"]["min"]
            rows.append({"T": T, "seconds": timing,
                         "ratio_to_sdpa": {k: t["min"] / base for k, t in timing.items()}})
    results["attention"] = {"B": B, "H": H, "D": D, "dtype": str(dtype).removeprefix("torch."), "rows": rows}


def decode_section(args, device, dtype, results):
    B, H, Hkv, D, S = 8, 16, 4, 64, 1024
    with torch.inference_mode():
        q = torch.randn(B, H, 1, D, device=device, dtype=dtype)
        k = torch.randn(B, Hkv, S, D, device=device, dtype=dtype)
        v = torch.randn(B, Hkv, S, D, device=device, dtype=dtype)
        G = H // Hkv
        candidates = {
            "F.sdpa(enable_gqa=True)": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
            "attnlab fast_attention": lambda: fast_attention(q, k, v),
            # what the model's decode step runs: the G query heads of a K/V head as G query rows
            "attnlab decode step (grouped rows)": lambda: sdpa(q.view(B, Hkv, G, D), k, v).view(B, H, 1, D),
            "teaching: repeat_kv + attention": lambda: scaled_dot_product_attention(
                q, repeat_kv(k, G), repeat_kv(v, G)),
        }
        timing = interleaved(candidates, max(20, args.reps * 4), device)
    print_table(f"decode attention, one query, B={B}, H={H}, Hkv={Hkv}, S={S} ({dtype})", list(timing.items()),
                "ms", baseline="F.sdpa(enable_gqa=True)")
    base = timing["F.sdpa(enable_gqa=True)"]["min"]
    results["decode_attention"] = {"B": B, "H": H, "Hkv": Hkv, "D": D, "S": S, "seconds": timing,
                                   "ratio_to_sdpa": {k: t["min"] / base for k, t in timing.items()}}


def memory_section(args, device, dtype, results):
    batch, prompt, new = (1, 32, 8) if args.quick else (8, 32, 128)
    with torch.inference_mode():
        hf, ours = model_pair(LARGE, prompt + new, device, dtype)
        ids = torch.randint(1, LARGE["vocab_size"], (batch, prompt), device=device)
        runs = {"hf generate (dynamic cache)": lambda: hf_generate(hf, ids, new),
                "hf generate (static cache)": lambda: hf_generate(hf, ids, new, cache_implementation="static"),
                "attnlab generate": lambda: generate(ours, ids, None, new)}
        # Each twice, the smaller kept: a first call can trigger one-time lazy allocations (a CUDA
        # library's workspace: 32 MiB once seen on an H200) that belong to no generation.
        peaks = {name: min(peak_memory_growth(fn, device) for _ in range(2)) for name, fn in runs.items()}
    cache = 2 * LARGE["num_hidden_layers"] * LARGE["num_key_value_heads"] * (
        LARGE["hidden_size"] // LARGE["num_attention_heads"]) * (prompt + new) * batch * torch.finfo(dtype).bits // 8
    print(f"\npeak memory growth of one generation, large config, batch {batch}, {new} new tokens "
          f"(the KV cache alone: {cache / 2**20:.1f} MiB)")
    for name, peak in peaks.items():
        print(f"  {name:<42} {peak / 2**20:9.1f} MiB   {peak / peaks['hf generate (dynamic cache)']:6.2f}x")
    results["memory"] = {"batch": batch, "prompt": prompt, "new_tokens": new, "peak_bytes": peaks,
                         "kv_cache_bytes": cache,
                         "ratio_to_hf": peaks["attnlab generate"] / peaks["hf generate (dynamic cache)"]}


def finish_run(results: dict, started: float, json_path: str | None) -> None:
    """Record the run's duration and closing load average, print the duration, write the JSON if asked."""
    results["seconds_total"] = time.perf_counter() - started
    results["load_average_end"] = os.getloadavg()
    print(f"\n({results['seconds_total']:.0f} s)")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {json_path}")


def main() -> None:
    global CLOCK
    args = parse_args()
    device = torch.device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or args.threads != 1):
        raise SystemExit("--clock cpu needs --device cpu and --threads 1 (CPU time adds up every thread)")
    CLOCK = args.clock
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)  # a script of its own: nothing else shares this process
    dtype_large = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    device_name = describe_device(device)
    results = {"device": str(device), "device_name": device_name, "cpu_threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
               "reps": args.reps, "quick": args.quick, "clock": args.clock, "small_config": SMALL,
               "large_config": LARGE,
               "load_average_start": os.getloadavg()}  # other jobs on the machine slow every candidate
    print(f"{device_name} ({device}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.reps} repetitions, interleaved, "
          f"{args.clock} clock; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    started = time.perf_counter()
    if "bandwidth" in args.sections or "large" in args.sections:
        bandwidth = copy_bandwidth(device, 64 if args.quick else 512, args.reps)
        flops = matmul_flops(device, dtype_large, 1024 if args.quick else 2048, args.reps)
        results["bandwidth"] = {"copy_bytes_per_s": bandwidth, "matmul_flops_per_s": flops,
                                "matmul_dtype": str(dtype_large).removeprefix("torch.")}
        print(f"\ncopy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write), matmul {flops / 1e9:.0f} GFLOP/s")
    if "small" in args.sections:
        new = 32 if args.quick else 256
        generation_section("small", SMALL, [4], 32, new, args, device, torch.float32, results,
                           uncached=not args.quick)
    if "large" in args.sections:
        batches, new = ([1], 8) if args.quick else ([1, 8], 128)
        generation_section("large", LARGE, batches, 32, new, args, device, dtype_large, results)
    if "ttft" in args.sections:
        ttft_section(args, device, dtype_large, results)
    if "attention" in args.sections:
        attention_section(args, device, dtype_large, results)
    if "decode" in args.sections:
        decode_section(args, device, dtype_large, results)
    if "memory" in args.sections:
        memory_section(args, device, dtype_large, results)
    finish_run(results, started, args.json)


if __name__ == "__main__":
    main()
