"""Pad: constant, reflect, edge and wrap modes on any axes (attribute and input forms)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from n2nonnx.backend.ops._util import int_list
from n2nonnx.backend.ops.conv import torch_pad_order
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec


def _index(size: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    positions = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return positions.clamp(0, size - 1)
    if mode == "wrap":
        return positions % size
    period = 2 * (size - 1) if size > 1 else 1
    folded = positions.abs() % period
    return torch.where(folded >= size, period - folded, folded)


def pad_tensor(
    x: torch.Tensor,
    pads: list[int],
    mode: str,
    value: float | int | None,
    axes: list[int] | None = None,
) -> torch.Tensor:
    """Pad ``x`` by ONNX ``pads`` ([begin..., end...] over ``axes``, default all axes)."""
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    count = len(axes)
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[count + i]
    if mode == "constant":
        return F.pad(x, torch_pad_order(full), value=0 if value is None else value)
    # negative pads crop first, positive ones index
    crop = [min(p, 0) for p in full]
    if any(crop):
        x = F.pad(x, torch_pad_order(crop))
    for axis in range(rank):
        begin, end = max(full[axis], 0), max(full[rank + axis], 0)
        if begin or end:
            x = x.index_select(axis, _index(x.shape[axis], begin, end, mode, x.device))
    return x


@register_op("Pad", versions=(1, 2))
def pad_attr(spec: NodeSpec) -> Kernel:
    """Pad before opset 11: ``pads`` (``paddings`` in opset 1), ``mode`` and ``value`` attributes."""
    pads = list(spec.attr("pads") if "pads" in spec.attrs else spec.attr("paddings"))
    mode, value = spec.attr("mode", "constant"), spec.attr("value", 0.0)
    return lambda x: pad_tensor(x, pads, mode, value)


@register_op("Pad", versions=(11, 13, 18, 19, 21, 23, 24, 25))
def pad(spec: NodeSpec) -> Kernel:
    """Pad with ``pads``, optional ``constant_value`` and (opset 18) ``axes`` inputs; ``wrap`` mode from opset 19.

    Versions 13 and 21 on only add element types.
    """
    mode = spec.attr("mode", "constant")
    static_pads = spec.const(1)
    static_axes = spec.const(3)

    def kernel(
        x: torch.Tensor,
        pads_t: torch.Tensor | None,
        value_t: torch.Tensor | None = None,
        axes_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pads = int_list(static_pads) if static_pads is not None else int_list(pads_t)
        axes = (
            int_list(static_axes)
            if static_axes is not None
            else (None if axes_t is None else int_list(axes_t))
        )
        value = None if value_t is None or value_t.numel() == 0 else value_t.reshape(-1)[0].item()
        return pad_tensor(x, pads, mode, value, axes)

    return kernel
