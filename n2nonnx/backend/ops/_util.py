"""Helpers shared by the op converters: dtype maps, axis handling, static-or-dynamic inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch

from n2nonnx.backend.spec import Builder, Kernel, NodeSpec
from n2nonnx.errors import UnsupportedOpError

TP = onnx.TensorProto
ONNX_TO_TORCH: dict[int, torch.dtype] = {
    TP.FLOAT: torch.float32,
    TP.DOUBLE: torch.float64,
    TP.FLOAT16: torch.float16,
    TP.BFLOAT16: torch.bfloat16,
    TP.INT8: torch.int8,
    TP.INT16: torch.int16,
    TP.INT32: torch.int32,
    TP.INT64: torch.int64,
    TP.UINT8: torch.uint8,
    TP.UINT16: torch.uint16,
    TP.UINT32: torch.uint32,
    TP.UINT64: torch.uint64,
    TP.BOOL: torch.bool,
}


def fixed(kernel: Kernel) -> Builder:
    """A builder for a kernel that reads nothing from the node.

    Args:
        kernel: the kernel every node of the op runs.

    Returns:
        The builder.
    """

    def build(spec: NodeSpec) -> Kernel:
        return kernel

    return build


def torch_dtype(spec: NodeSpec, onnx_type: int) -> torch.dtype:
    """The torch dtype for an ONNX element type, or UnsupportedOpError naming the node."""
    try:
        return ONNX_TO_TORCH[onnx_type]
    except KeyError:
        name = TP.DataType.Name(onnx_type) if onnx_type in TP.DataType.values() else str(onnx_type)
        raise UnsupportedOpError(
            f"node {spec.name!r} ({spec.op_type}) uses element type {name}, which the torch backend lacks"
        ) from None


def int_list(value: Any) -> list[int]:
    """A tensor / array / sequence of integers as a Python list."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(value).reshape(-1).tolist()]


def static_or_runtime(
    spec: NodeSpec,
    index: int,
    attr: str | None = None,
    default: Any = None,
    convert: Callable[[Any], Any] = int_list,
) -> tuple[Any, bool]:
    """An ``axes``-like argument that is an attribute (old opsets) or an input (new opsets).

    Args:
        spec: the node.
        index: the input index carrying the value in newer opsets.
        attr: the attribute name carrying it in older opsets (``None``: input only).
        default: value when neither is given.
        convert: turns an array / tensor into the Python value.

    Returns:
        ``(value, dynamic)``: if ``dynamic`` is True the value must be read at run time
        from input ``index`` with ``convert``; otherwise ``value`` is final.
    """
    if attr is not None and attr in spec.attrs:
        return spec.attrs[attr], False
    if spec.has_input(index):
        const = spec.const(index)
        if const is None:
            return None, True
        return convert(const), False
    return default, False


def is_float(tensor: torch.Tensor) -> bool:
    """True for floating-point tensors."""
    return tensor.is_floating_point()
