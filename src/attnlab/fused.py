"""One matrix multiplication for several ``nn.Linear`` layers that read the same input.

Shape legend: ``C`` input width, ``R_i`` output rows of layer ``i``, ``R = sum
R_i``, ``*`` any leading dims.

The query, key and value projections of an attention layer all multiply the
same normalised input, and so do the gate and up projections of Llama's MLP.
One ``(R, C)`` matrix multiplication does the work of several ``(R_i, C)``
ones with fewer kernel launches and one read of the input. The layers keep
their own parameters (and their names in the ``state_dict``, which checkpoints
and the chapters rely on): :class:`FusedLinear` makes those parameters *views*
of one ``(R, C)`` tensor (stored as ``(C, R)`` in float32 on the CPU, see below), so the
fused weight costs no extra memory and always holds the layers' current
values. Loading a state dict
(which copies in place) keeps the views; anything that replaces a parameter
(``.to(dtype)``, assigning a new ``nn.Parameter``) is noticed at the next call
and the storage is rebuilt.

Autograd only sees the fused tensor, not the per-layer parameters, so the
fused product is used only when no gradient is being recorded; with gradients
enabled the layers run one by one, as written.

Float32 weights on the CPU are stored *input-major*: the ``(R, C)`` weight an
``nn.Linear`` holds is the transpose of a contiguous ``(C, R)`` tensor
(:func:`store_for_decoding`; the same values, other strides). Decoding
multiplies only a few rows (one per sequence) by each weight, and there the
CPU's float32 BLAS reads a ``(C, R)`` matrix up to 1.5x faster than the
row-major ``(R, C)`` one ``nn.Linear`` allocates; for a long prompt the two
layouts cost about the same (``benchmarks/weight_layout.py``). Everything else
stays row-major: on the CPU, float64, float16 and bfloat16 products were as
fast or faster that way, and it is the layout the GPU benchmarks measured.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FusedLinear:
    """Runs ``layers`` (``nn.Linear``, same input width) as one matrix multiplication.

    Not an ``nn.Module`` on purpose: it owns no parameters, only a view onto
    the layers' own. ``__call__(x)`` returns the concatenated outputs.

    Shapes:
        x: (*, C)
        returns: (*, R) = the layers' outputs side by side, in order
    """

    def __init__(self, layers: list[nn.Linear]) -> None:
        if not layers or not all(isinstance(layer, nn.Linear) for layer in layers):
            raise ValueError(f"FusedLinear needs a list of nn.Linear layers, got {layers!r}")
        widths = {layer.in_features for layer in layers}
        if len(widths) != 1:
            raise ValueError(f"the layers must share their input width, got in_features {sorted(widths)}")
        biases = {layer.bias is not None for layer in layers}
        if len(biases) != 1:
            raise ValueError("the layers must all have a bias or all have none")
        self.layers = layers
        self.has_bias = biases.pop()
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None
        self._pointers: tuple[int, ...] = ()
        self.fuse()

    def _current_pointers(self) -> tuple[int, ...]:
        params = [layer.weight for layer in self.layers]
        if self.has_bias:
            params += [layer.bias for layer in self.layers]
        return tuple(p.data_ptr() for p in params)

    def fuse(self) -> None:
        """Copy the layers' parameters into one tensor and make them views of it.

        Shapes:
            self.weight: (R, C); self.bias: (R,) or None
        """
        # The same kind of tensor as the parameters: normal ones stay normal (and trainable) even
        # when re-fused inside torch.inference_mode; a model built inside it has inference tensors.
        inference = self.layers[0].weight.is_inference()
        with torch.inference_mode(inference), torch.no_grad():
            self.weight = _stack_as_views([layer.weight for layer in self.layers])
            self.bias = _stack_as_views([layer.bias for layer in self.layers]) if self.has_bias else None
        self._pointers = self._current_pointers()

    def __call__(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and any(layer.weight.requires_grad for layer in self.layers):
            return torch.cat([layer(x) for layer in self.layers], dim=-1)  # (*, R), with autograd
        if not torch.compiler.is_compiling() and self._current_pointers() != self._pointers:
            self.fuse()  # a parameter was replaced (.to(), a new nn.Parameter): rebuild the views
        return F.linear(x, self.weight, self.bias)  # (*, C) @ (C, R) -> (*, R)


def input_major_for(weight: Tensor) -> bool:
    """Whether ``weight`` is stored input-major: float32 on the CPU, where that was measured faster."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def store_for_decoding(layer: nn.Linear) -> nn.Linear:
    """Store ``layer.weight`` in the layout decoding runs fastest on (see the module's docstring); returns ``layer``.

    Float32 on the CPU, the weight becomes the transpose of a contiguous
    ``(C, R)`` tensor; otherwise a contiguous ``(R, C)`` one: the same values
    and shape, other strides. ``.to()`` keeps the strides; modules call this
    again after ``.to()`` so that the layout follows the device and dtype.

    Shapes:
        layer.weight: (R, C), stored as (C, R) in float32 on the CPU
    """
    weight = layer.weight
    input_major = input_major_for(weight)
    if (weight.t() if input_major else weight).is_contiguous():
        return layer  # already in the layout
    with torch.inference_mode(weight.is_inference()), torch.no_grad():
        if input_major:
            weight.data = weight.detach().t().contiguous().t()  # (R, C) -> (C, R) contiguous -> (R, C) view
        else:
            weight.data = weight.detach().contiguous()  # (R, C) row-major
    return layer


def _stack_as_views(params: list[nn.Parameter]) -> Tensor:
    """Concatenate ``params`` into one tensor and point each ``.data`` at its block.

    Biases are stacked along dim 0. Weights are stacked along dim 0 too, or,
    in float32 on the CPU, input-major: one contiguous ``(C, R)`` tensor whose
    column blocks are the layers' transposed weights; the returned ``(R, C)``
    matrix is then its transpose.

    Shapes:
        params: (R_i, C) or (R_i,) each -> returns (R, C) or (R,)
    """
    input_major = params[0].dim() == 2 and input_major_for(params[0])
    if input_major:
        blocks = torch.cat([p.detach().t() for p in params], dim=1)  # (C, R_i) each -> (C, R), contiguous
    else:
        blocks = torch.cat([p.detach() for p in params], dim=0)  # (R, *rest), one new storage
    start = 0
    for p in params:
        rows = p.shape[0]
        p.data = blocks[:, start:start + rows].t() if input_major else blocks[start:start + rows]  # (R_i, ...)
        start += rows
    return blocks.t() if input_major else blocks  # (C, R) -> (R, C), or (R, *rest)
