"""Measure the peak memory a computation allocates, on the CPU or on an accelerator (chapters 6 and 8).

On CUDA the caching allocator keeps the statistics; on the CPU PyTorch's
profiler records every allocation and free of the CPU allocator
(``profile_memory=True``), and replaying them in time order gives the peak. Both
count what the allocator really handed out, including the buffers a fused
kernel allocates inside, not what the code under test says it allocates.
"""

import contextlib
import os
import sys
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for a while (the profiler's C++ side logs two lines per run there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_allocated_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[object, int]:
    """Run ``fn()`` and return ``(its result, the peak bytes allocated while it ran)``.

    The peak is measured above what was allocated before the call: the inputs
    do not count, the result (still alive at the end) does. On the CPU the
    profiler slows the call down: time it separately.

    Shapes:
        returns: (whatever fn returns, int)
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"peak_allocated_bytes measures cpu or cuda devices, got {device}")
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # positive when allocated, negative when freed
        peak = max(peak, live)
    return result, peak
