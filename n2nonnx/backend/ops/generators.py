"""Ops that create tensors: Constant, ConstantOfShape, Range, EyeLike."""

from __future__ import annotations

import numpy as np
import torch

from n2nonnx.backend.ops._util import int_list, torch_dtype
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec
from n2nonnx.errors import UnsupportedOpError

_VALUE_ATTRS = {
    "value": None,
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


@register_op("Constant", versions=(1, 9, 11, 12, 13, 19, 21, 23, 24, 25))
def constant(spec: NodeSpec) -> Kernel:
    """Constant from ``value`` / ``value_float(s)`` / ``value_int(s)`` (sparse and string values refused).

    The versions after 12 only add element types; a type torch lacks is refused.
    """
    for name, np_type in _VALUE_ATTRS.items():
        if name in spec.attrs:
            array = (
                np.array(spec.attrs[name], dtype=np_type) if np_type else np.array(spec.attrs[name])
            )
            break
    else:
        raise UnsupportedOpError(
            f"node {spec.name!r}: Constant with {sorted(spec.attrs)} (strings, sparse) is not supported"
        )
    try:
        value = torch.from_numpy(array.copy())
    except TypeError as error:
        raise UnsupportedOpError(
            f"node {spec.name!r}: Constant of type {array.dtype} is not supported"
        ) from error
    return lambda: value


@register_op("ConstantOfShape", versions=(9, 20, 21, 23, 24, 25))
def constant_of_shape(spec: NodeSpec) -> Kernel:
    """A tensor of the given shape filled with ``value`` (default float32 zero)."""
    fill = spec.attr("value")
    value = (
        torch.from_numpy(np.array(fill).reshape(-1)[:1].copy())
        if fill is not None
        else torch.zeros(1)
    )

    def kernel(shape: torch.Tensor) -> torch.Tensor:
        return value.to(shape.device).reshape(()).expand(int_list(shape)).clone()

    return kernel


@register_op("Range", versions=(11, 27))
def range_op(spec: NodeSpec) -> Kernel:
    """Range(start, limit, delta) with ONNX's element count max(ceil((limit-start)/delta), 0).

    Values are computed in float64 and cast, which is what opset 27's ``stash_type`` (float
    or double) asks of float16 / bfloat16 ranges.
    """

    def kernel(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        first, last, step = start.item(), limit.item(), delta.item()
        count = max(int(np.ceil((last - first) / step)), 0)
        steps = torch.arange(
            count,
            device=start.device,
            dtype=torch.float64 if start.is_floating_point() else torch.int64,
        )
        return (first + steps * step).to(start.dtype)

    return kernel


@register_op("EyeLike", versions=(9, 22))
def eye_like(spec: NodeSpec) -> Kernel:
    """Ones on diagonal ``k`` of a 2-D tensor shaped like the input."""
    offset = spec.attr("k", 0)
    target = spec.attr("dtype")
    dtype = torch_dtype(spec, target) if target is not None else None

    def kernel(x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device).reshape(-1, 1)
        cols = torch.arange(x.shape[1], device=x.device).reshape(1, -1)
        return (cols - rows == offset).to(dtype or x.dtype)

    return kernel
