"""Benchmark for chapter 7: one decode step's matrix products with the weights in two layouts.

``nn.Linear`` stores its weight row-major, ``(R, C)``: one row per output.
``attnlab`` stores the same values *input-major*, as the transpose of a
contiguous ``(C, R)`` matrix (:func:`attnlab.fused.store_for_decoding`). This
script multiplies ``M`` rows by every weight matrix of the course's small and
large benchmark models (``vs_hf.py``'s ``SMALL`` and ``LARGE``: each layer's
fused q/k/v, output, fused gate/up and down projections, then the LM head),
once per layout, with the same values: ``M`` is the batch in a decode step and
the number of prompt tokens in a prefill. Every matrix is a separate tensor, so
each pass streams the weights from memory as a real decode step does; the two
layouts are timed in one process, interleaved (``vs_hf.interleaved``), and the
table gives the minimum over the repetitions and the ratio
``row-major time / input-major time`` (above 1: input-major is faster).

Run from the repository root::

    python benchmarks/weight_layout.py                    # ~2 minutes on one CPU core
    python benchmarks/weight_layout.py --json book/data/weight_layout_cpu.json
    python benchmarks/weight_layout.py --device cuda --dtype bfloat16
"""

import argparse
import os
import time

import torch
import torch.nn.functional as F

import vs_hf


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", help="dtype of the weights (default float32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on the CPU (default 1, as vs_hf.py --threads 1; 0: torch's default)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per comparison (default 5)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 32, 128, 1024],
                        help="rows M multiplied by every weight (default 1 4 8 32 128 1024)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH")
    return parser.parse_args()


def step_weight_shapes(sizes: dict) -> list[tuple[int, int]]:
    """``(R, C)`` of every matrix one decode step multiplies, in order (the embedding is a lookup).

    Shapes:
        per layer: q/k/v fused (H D + 2 Hkv D, C), output (C, H D), gate/up fused (2 F, C),
        down (C, F); then the LM head (V, C)
    """
    C, F_, V = sizes["hidden_size"], sizes["intermediate_size"], sizes["vocab_size"]
    D = C // sizes["num_attention_heads"]
    qkv = (sizes["num_attention_heads"] + 2 * sizes["num_key_value_heads"]) * D
    layer = [(qkv, C), (C, sizes["num_attention_heads"] * D), (2 * F_, C), (C, F_)]
    return layer * sizes["num_hidden_layers"] + [(V, C)]


def main() -> None:
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu" and torch.get_num_threads() == 1:
        vs_hf.CLOCK = "cpu"  # one thread: this process's CPU time, steadier on a shared machine
    results = {"device": str(device), "device_name": vs_hf.describe_device(device),
               "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": args.dtype,
               "reps": args.reps, "clock": vs_hf.CLOCK, "load_average_start": os.getloadavg(), "configs": {}}
    print(f"{results['device_name']} ({device}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"{args.dtype}, {args.reps} repetitions, interleaved, {vs_hf.CLOCK} clock")
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.inference_mode():
        for name, sizes in (("small", vs_hf.SMALL), ("large", vs_hf.LARGE)):
            row_major = [torch.randn(shape, device=device, dtype=dtype) for shape in step_weight_shapes(sizes)]
            input_major = [w.t().contiguous().t() for w in row_major]  # same values, (C, R) storage
            nbytes = sum(w.nbytes for w in row_major)
            print(f"\n{name} model: {len(row_major)} matrices, {nbytes / 2**20:.0f} MiB")
            rows = []
            for m in args.rows:
                xs = [torch.randn(m, w.shape[1], device=device, dtype=dtype) for w in row_major]
                timing = vs_hf.interleaved({
                    "row-major": lambda: [F.linear(x, w) for x, w in zip(xs, row_major)],
                    "input-major": lambda: [F.linear(x, w) for x, w in zip(xs, input_major)],
                }, args.reps, device)
                rm, im = timing["row-major"]["min"], timing["input-major"]["min"]
                rows.append({"rows": m, "seconds_row_major": rm, "seconds_input_major": im,
                             "ratio": rm / im, "seconds": timing})
                print(f"  M={m:>5}: row-major {1e3 * rm:9.2f} ms, input-major {1e3 * im:9.2f} ms, "
                      f"ratio {rm / im:5.2f}x   ({nbytes / im / 1e9:6.1f} GB/s of weights read)")
            results["configs"][name] = {"sizes": sizes, "weight_bytes": nbytes, "rows": rows}
            del row_major, input_major
    vs_hf.finish_run(results, started, args.json)


if __name__ == "__main__":
    main()
