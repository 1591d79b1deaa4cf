"""Measure the peak memory of the tensors a piece of code creates (chapter 6).

``peak_tensor_memory(fn)`` runs ``fn()`` and watches, through a
``TorchDispatchMode``, every tensor that a PyTorch operation returns while it
runs. A tensor whose storage is new (not one of the operation's inputs, so not a
view and not an in-place result) is counted from the moment it is created until
its storage is freed. The peak is the most bytes such tensors held at one time.

It counts what the program asked for, on any device: the KV cache buffers,
activations, logits, temporary copies. It does not see scratch memory that a
kernel allocates inside one operation, memory held before ``fn`` started (model
weights), or what an allocator keeps in reserve. On CUDA the allocator's own
peak (``torch.cuda.max_memory_allocated``) is reported next to it.
"""

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

Result = TypeVar("Result")


@dataclass(frozen=True)
class MemoryReport:
    """What ``peak_tensor_memory`` measured, in bytes.

    ``peak_bytes``: the most bytes held at one time by tensors created inside
    ``fn``. ``retained_bytes``: those still alive when ``fn`` returned (its
    result, caches it built). ``allocator_peak_bytes``: CUDA only, the caching
    allocator's peak during ``fn`` minus what was allocated before; ``None``
    elsewhere.
    """

    peak_bytes: int
    retained_bytes: int
    allocator_peak_bytes: int | None


class _NewTensorBytes(TorchDispatchMode):
    """Counts the bytes of live storages created by operations inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            id(t.untyped_storage())
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)  # the Python storage object lives as long as the storage
            if key in inputs or key in self._live:
                continue  # a view, an in-place result, or already counted
            nbytes = storage.nbytes()
            self._live.add(key)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key, nbytes)
        return out


def peak_tensor_memory(fn: Callable[[], Result], device: torch.device | str | None = None) -> tuple[Result, MemoryReport]:
    """Run ``fn()``; return its result and the peak bytes of the tensors it created.

    ``device``: pass the CUDA device ``fn`` works on to also get the CUDA
    allocator's peak (``allocator_peak_bytes``); on other devices it is ``None``.

    Example:
        >>> _, report = peak_tensor_memory(lambda: torch.zeros(1000) + 1)
        >>> report.peak_bytes, report.retained_bytes
        (8000, 4000)

    Shapes:
        returns: (whatever ``fn`` returns, MemoryReport)
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    tracker = _NewTensorBytes()
    with tracker:
        result = fn()
    allocator_peak = None
    if cuda:
        torch.cuda.synchronize(device)
        allocator_peak = torch.cuda.max_memory_allocated(device) - before
    report = MemoryReport(peak_bytes=tracker.peak, retained_bytes=tracker.current, allocator_peak_bytes=allocator_peak)
    return result, report
