"""Tensor conversions between ONNX and torch for the backend: protos, arrays, dtypes, keys."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from n2nonnx.errors import DataError, InvalidArgumentError, UnsupportedOpError

FLOAT_ONNX = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}

# ONNX floating element type -> the torch dtype holding it
_TORCH_FLOAT: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
}


# ONNX integer element type -> the torch dtype holding it (inputs such as token ids)
_TORCH_INT: dict[int, torch.dtype] = {
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
}


def as_proto(model: Any) -> onnx.ModelProto:
    """The ModelProto of ``model`` (a ModelProto, or anything with a ``.proto``)."""
    proto = model.proto if hasattr(model, "proto") else model
    if not isinstance(proto, onnx.ModelProto):
        raise InvalidArgumentError(
            f"expected an onnx.ModelProto or an object with a .proto attribute, got {type(model).__name__}"
        )
    return proto


def to_torch(tensor: onnx.TensorProto) -> torch.Tensor:
    """An initializer's value as a torch tensor (owning its memory)."""
    if tensor.data_type == onnx.TensorProto.BFLOAT16:
        return torch.from_numpy(np.asarray(numpy_helper.to_array(tensor), dtype=np.float32)).to(
            torch.bfloat16
        )
    try:
        array = numpy_helper.to_array(tensor)
        return torch.from_numpy(np.array(array, copy=True))
    except (TypeError, ValueError) as error:
        raise UnsupportedOpError(
            f"initializer {tensor.name!r} has ONNX type "
            f"{onnx.TensorProto.DataType.Name(tensor.data_type)}, which torch cannot hold"
        ) from error


def to_onnx_array(value: torch.Tensor, data_type: int) -> np.ndarray:
    """A torch tensor as a numpy array of the ONNX element type ``data_type``."""
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        value = value.float()
    np_type = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    return value.numpy().astype(np_type, copy=False)


def declared_dtype(value: onnx.ValueInfoProto, override: torch.dtype | None) -> torch.dtype | None:
    """The dtype a graph input should arrive in: its float type, or its integer type.

    Floating inputs are cast to the float type (``override`` where given); floating data
    for an integer input (token ids read as float32 by the data layer) to its integer type.
    """
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    if elem in _TORCH_INT:
        return _TORCH_INT[elem]
    if elem not in FLOAT_ONNX:
        return None
    if override is not None:
        return override
    return _TORCH_FLOAT[elem]


def coerce(value: Any, wanted: torch.dtype | None, device: torch.device | None) -> torch.Tensor:
    """An input as a tensor on the module's device, floating values in the ``wanted`` dtype.

    Raises:
        DataError: floating values that are not whole numbers for an integer input.
    """
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if device is not None and value.device != device:
        value = value.to(device)
    if wanted is not None and value.dtype != wanted and value.is_floating_point():
        if not wanted.is_floating_point and not bool((value == value.round()).all()):
            raise DataError(
                f"the model's input is {str(wanted).removeprefix('torch.')} (token ids) but the "
                "data holds values that are not whole numbers"
            )
        value = value.to(wanted)
    return value


def safe_key(name: str, taken: set[str]) -> str:
    """A torch-safe, unique attribute name for ONNX tensor ``name`` (added to ``taken``)."""
    base = "t_" + re.sub(r"[^0-9A-Za-z_]", "_", name)
    key, count = base, 1
    while key in taken:
        count += 1
        key = f"{base}_{count}"
    taken.add(key)
    return key
