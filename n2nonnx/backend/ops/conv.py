"""Conv and ConvTranspose (1-D, 2-D, 3-D; groups, dilations, explicit and automatic pads)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def same_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    upper: bool,
) -> list[int]:
    """ONNX SAME_UPPER / SAME_LOWER pads as [begin..., end...] for the given input sizes."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def torch_pad_order(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] to F.pad's [b_last, e_last, ..., b1, e1]."""
    rank = len(pads) // 2
    order: list[int] = []
    for axis in reversed(range(rank)):
        order += [pads[axis], pads[axis + rank]]
    return order


@register_op("Conv", versions=(1, 11, 22))
def conv(spec: NodeSpec) -> Kernel:
    """Conv: N-D convolution; symmetric pads go to torch, asymmetric ones through F.pad."""
    auto_pad = spec.attr("auto_pad", "NOTSET")
    group = spec.attr("group", 1)
    kernel_attr = spec.attr("kernel_shape")
    strides_attr = spec.attr("strides")
    dilations_attr = spec.attr("dilations")
    pads_attr = spec.attr("pads")
    cache: dict[int | tuple[int, ...], tuple] = {}

    def settings(rank: int, kernel_shape: Sequence[int], sizes: Sequence[int]) -> tuple:
        strides = list(strides_attr or [1] * rank)
        dilations = list(dilations_attr or [1] * rank)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = same_pads(sizes, kernel_shape, strides, dilations, auto_pad == "SAME_UPPER")
        elif auto_pad == "VALID":
            pads = [0] * (2 * rank)
        else:
            pads = list(pads_attr or [0] * (2 * rank))
        symmetric = pads[:rank] == pads[rank:]
        return strides, dilations, pads, symmetric

    def kernel(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        key = rank if auto_pad not in ("SAME_UPPER", "SAME_LOWER") else tuple(x.shape[2:])
        found = cache.get(key)
        if found is None:
            found = settings(rank, kernel_attr or w.shape[2:], x.shape[2:])
            cache[key] = found
        strides, dilations, pads, symmetric = found
        if symmetric:
            return _CONV[rank](x, w, b, strides, pads[:rank], dilations, group)
        x = F.pad(x, torch_pad_order(pads))
        return _CONV[rank](x, w, b, strides, 0, dilations, group)

    return kernel


@register_op("ConvTranspose", versions=(1, 11, 22))
def conv_transpose(spec: NodeSpec) -> Kernel:
    """ConvTranspose with output_padding, output_shape, auto_pad and groups.

    Opset 1's text puts SAME_UPPER's odd padding cell at the start; opset 11 moved it to the
    end as for Conv, and onnxruntime applies the opset-11 rule to both, as this does.
    """
    auto_pad = spec.attr("auto_pad", "NOTSET")
    group = spec.attr("group", 1)
    kernel_attr = spec.attr("kernel_shape")
    output_shape = spec.attr("output_shape")

    def kernel(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        kernel_shape = list(kernel_attr or w.shape[2:])
        strides = list(spec.attr("strides") or [1] * rank)
        dilations = list(spec.attr("dilations") or [1] * rank)
        out_pad = list(spec.attr("output_padding") or [0] * rank)
        sizes = x.shape[2:]
        if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = (
                list(output_shape[-rank:])
                if output_shape is not None
                else [s * st for s, st in zip(sizes, strides, strict=True)]
            )
            begins, ends = [], []
            for i in range(rank):
                total = (
                    strides[i] * (sizes[i] - 1)
                    + out_pad[i]
                    + ((kernel_shape[i] - 1) * dilations[i] + 1)
                    - target[i]
                )
                if total < 0:  # a larger output than the natural one: grow at the end
                    out_pad[i] -= total
                    total = 0
                if auto_pad == "SAME_UPPER":
                    begins.append(total // 2)
                    ends.append(total - total // 2)
                else:
                    begins.append(total - total // 2)
                    ends.append(total // 2)
            pads = begins + ends
        elif auto_pad == "VALID":
            pads = [0] * (2 * rank)
        else:
            pads = list(spec.attr("pads") or [0] * (2 * rank))
        # torch pads both sides equally: pad by the smaller side, trim the rest
        both = [min(pads[i], pads[rank + i]) for i in range(rank)]
        y = _CONV_T[rank](x, w, b, strides, both, out_pad, group, dilations)
        if pads[:rank] != pads[rank:]:
            index = [slice(None), slice(None)]
            for i in range(rank):
                size = y.shape[2 + i]
                index.append(slice(pads[i] - both[i], size - (pads[rank + i] - both[i])))
            y = y[tuple(index)]
        return y

    return kernel
