"""Pooling: MaxPool (with indices), AveragePool, LpPool, global pools."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from n2nonnx.backend.ops.conv import same_pads, torch_pad_order
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class _Window:
    """Pool window settings resolved against an input size (pads incl. auto_pad and ceil_mode)."""

    def __init__(self, spec: NodeSpec):
        self.kernel = list(spec.attr("kernel_shape"))
        rank = len(self.kernel)
        self.rank = rank
        self.strides = list(spec.attr("strides") or [1] * rank)
        self.dilations = list(spec.attr("dilations") or [1] * rank)
        self.auto_pad = spec.attr("auto_pad", "NOTSET")
        self.pads = list(spec.attr("pads") or [0] * (2 * rank))
        self.ceil = bool(spec.attr("ceil_mode", 0))
        self._plans: dict[tuple[int, ...], tuple[list[int], list[int], list[int]]] = {}

    def plan(self, sizes: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """(pads, output sizes, extra end padding) for these input sizes, cached per size."""
        key = tuple(sizes)
        found = self._plans.get(key)
        if found is None:
            pads, outs = self.resolve(list(sizes))
            found = (pads, outs, self.extra_end(list(sizes), pads, outs))
            self._plans[key] = found
        return found

    def resolve(self, sizes: list[int]) -> tuple[list[int], list[int]]:
        """Pads [begin..., end...] and the output sizes for these input sizes."""
        rank = self.rank
        effective = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=True)]
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = same_pads(
                sizes, self.kernel, self.strides, self.dilations, self.auto_pad == "SAME_UPPER"
            )
            outs = [math.ceil(s / st) for s, st in zip(sizes, self.strides, strict=True)]
            return pads, outs
        pads = [0] * (2 * rank) if self.auto_pad == "VALID" else self.pads
        outs = []
        for i in range(rank):
            span = sizes[i] + pads[i] + pads[rank + i] - effective[i]
            if self.ceil:
                out = math.ceil(span / self.strides[i]) + 1
                # the last window must start inside the input or the begin pad
                if (out - 1) * self.strides[i] >= sizes[i] + pads[i]:
                    out -= 1
            else:
                out = span // self.strides[i] + 1
            outs.append(out)
        return pads, outs

    def extra_end(self, sizes: list[int], pads: list[int], outs: list[int]) -> list[int]:
        """Padding needed past the end pad so that every output window fits."""
        rank = self.rank
        extra = []
        for i in range(rank):
            need = (outs[i] - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1
            have = sizes[i] + pads[i] + pads[rank + i]
            extra.append(max(0, need - have))
        return extra


@register_op("MaxPool", versions=(1, 8, 10, 11, 12, 22))
def max_pool(spec: NodeSpec) -> Kernel:
    """MaxPool; the optional Indices output (opset 8) uses ONNX's flattened (N, C, spatial) indexing.

    ``ceil_mode`` and ``dilations`` arrived in opset 10 and default to the older behaviour.
    """
    window = _Window(spec)
    rank = window.rank
    with_indices = len(spec.outputs) > 1 and spec.outputs[1] != ""
    storage_order = spec.attr("storage_order", 0)

    def kernel(x: torch.Tensor):
        sizes = list(x.shape[2:])
        pads, outs, extra = window.plan(sizes)
        symmetric = (
            pads[:rank] == pads[rank:]
            and not any(extra)
            and all(2 * p <= k for p, k in zip(pads[:rank], window.kernel, strict=True))
        )
        if symmetric and not with_indices:
            return _MAX[rank](
                x, window.kernel, window.strides, pads[:rank], window.dilations, False
            )
        if symmetric:
            y, index = _MAX[rank](
                x, window.kernel, window.strides, pads[:rank], window.dilations, False, True
            )
            return y, _onnx_indices(index, x.shape, storage_order)
        low = torch.finfo(x.dtype).min if x.is_floating_point() else torch.iinfo(x.dtype).min
        ends = [pads[rank + i] + extra[i] for i in range(rank)]
        padded = F.pad(x, torch_pad_order(pads[:rank] + ends), value=low)
        y, index = _MAX[rank](
            padded, window.kernel, window.strides, 0, window.dilations, False, True
        )
        y = y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]
        if not with_indices:
            return y
        index = index[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]
        # map indices in the padded tensor back to the unpadded one
        coords = []
        rest = index
        for i in reversed(range(rank)):
            coords.append(rest % padded.shape[2 + i] - pads[i])
            rest = rest // padded.shape[2 + i]
        coords.reverse()
        flat = torch.zeros_like(index)
        for i in range(rank):
            flat = flat * sizes[i] + coords[i]
        return y, _onnx_indices(flat, x.shape, storage_order)

    return kernel


def _onnx_indices(index: torch.Tensor, shape: Sequence[int], storage_order: int) -> torch.Tensor:
    spatial = math.prod(shape[2:])
    n, c = shape[0], shape[1]
    if storage_order == 1 and len(shape) == 4:
        height, width = shape[2], shape[3]
        row, col = index // width, index % width
        index = col * height + row
    base = (
        torch.arange(n * c, device=index.device).reshape([n, c] + [1] * (len(shape) - 2)) * spatial
    )
    return index + base


@register_op("AveragePool", versions=(1, 7, 10, 11, 19, 22))
def average_pool(spec: NodeSpec) -> Kernel:
    """AveragePool with count_include_pad (opset 7), asymmetric pads, ceil_mode (10) and dilations (19)."""
    window = _Window(spec)
    rank = window.rank
    include_pad = bool(spec.attr("count_include_pad", 0))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        sizes = list(x.shape[2:])
        pads, outs, extra = window.plan(sizes)
        simple = (
            pads[:rank] == pads[rank:]
            and not any(extra)
            and window.dilations == [1] * rank
            and all(2 * p <= k for p, k in zip(pads[:rank], window.kernel, strict=True))
        )
        if simple:
            return _AVG[rank](x, window.kernel, window.strides, pads[:rank], False, include_pad)
        # general case: window sums over a zero-padded input divided by the counted cells
        ends = [pads[rank + i] + extra[i] for i in range(rank)]
        order = torch_pad_order(pads[:rank] + ends)
        channels = x.shape[1]
        ones = torch.ones([channels, 1] + window.kernel, dtype=x.dtype, device=x.device)
        sums = _CONV[rank](
            F.pad(x, order), ones, None, window.strides, 0, window.dilations, channels
        )
        valid = torch.ones([1, 1] + sizes, dtype=x.dtype, device=x.device)
        if include_pad:
            valid = F.pad(valid, torch_pad_order(pads), value=1.0)
            valid = F.pad(valid, torch_pad_order([0] * rank + extra))
        else:
            valid = F.pad(valid, order)
        counts = _CONV[rank](valid, ones[:1], None, window.strides, 0, window.dilations)
        y = sums / counts
        return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]

    return kernel


@register_op("LpPool", versions=(1, 2, 11, 18, 22))
def lp_pool(spec: NodeSpec) -> Kernel:
    """LpPool: (sum |x|^p over the window) ^ (1/p), zero padding; ceil_mode and dilations from opset 18.

    ``p`` was a float before opset 2 and an integer since; both are used as given.
    """
    window = _Window(spec)
    rank = window.rank
    p = spec.attr("p", 2)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        sizes = list(x.shape[2:])
        pads, outs = window.resolve(sizes)
        extra = window.extra_end(sizes, pads, outs)
        order = torch_pad_order(pads[:rank] + [pads[rank + i] + extra[i] for i in range(rank)])
        channels = x.shape[1]
        ones = torch.ones([channels, 1] + window.kernel, dtype=x.dtype, device=x.device)
        sums = _CONV[rank](
            F.pad(x.abs().pow(p), order), ones, None, window.strides, 0, window.dilations, channels
        )
        return sums.pow(1.0 / p)[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]

    return kernel


@register_op("GlobalAveragePool", versions=(1, 22))
def global_average_pool(spec: NodeSpec) -> Kernel:
    """Mean over all spatial axes, kept as size-1 axes."""
    return lambda x: x.mean(tuple(range(2, x.dim())), keepdim=True)


@register_op("GlobalMaxPool", versions=(1, 22))
def global_max_pool(spec: NodeSpec) -> Kernel:
    """Max over all spatial axes, kept as size-1 axes."""
    return lambda x: x.amax(tuple(range(2, x.dim())), keepdim=True)


@register_op("GlobalLpPool", versions=(1, 2, 22))
def global_lp_pool(spec: NodeSpec) -> Kernel:
    """Lp norm over all spatial axes, kept as size-1 axes (``p`` a float before opset 2)."""
    p = spec.attr("p", 2)
    return lambda x: x.abs().pow(p).sum(tuple(range(2, x.dim())), keepdim=True).pow(1.0 / p)
