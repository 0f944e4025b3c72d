"""Matching a data set's sample shape to a model's graph input (batch dimension symbolic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from n2nonnx.data.dataset import TrainTestData
from n2nonnx.errors import DataError
from n2nonnx.graph.index import Dim, value_info_dims


@dataclass(frozen=True)
class ModelInput:
    """The one data input of a model.

    Attributes:
        name: graph input name.
        shape: dims including the batch dimension; ``str`` for symbolic, ``None`` for unknown.
        elem_type: ONNX element type (``onnx.TensorProto.FLOAT`` ...).
    """

    name: str
    shape: tuple[Dim, ...]
    elem_type: int


def model_input(model: Any) -> ModelInput:
    """The single non-initializer graph input of a model.

    Args:
        model: an ``onnx.ModelProto`` or an object with ``.proto``.

    Returns:
        Its name, shape and element type.

    Raises:
        DataError: the model has no data input or more than one.
    """
    proto: onnx.ModelProto = getattr(model, "proto", model)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs) or "none"
        raise DataError(
            f"training needs a model with exactly one data input, this one has {len(inputs)} "
            f"({names})"
        )
    value = inputs[0]
    dims = value_info_dims(value) or ()
    return ModelInput(value.name, dims, int(value.type.tensor_type.elem_type))


def format_shape(shape: Sequence[Dim]) -> str:
    """``(batch, 1, 40)``-style text for a shape with symbolic or unknown dims."""
    return "(" + ", ".join("?" if dim is None else str(dim) for dim in shape) + ")"


def sample_fits(sample_shape: Sequence[int], input_shape: Sequence[Dim]) -> bool:
    """True if samples of ``sample_shape`` fit an input of ``input_shape`` (batch dim first).

    Symbolic and unknown dims of the input match any size.
    """
    expected = tuple(input_shape)[1:]
    if len(expected) != len(sample_shape):
        return False
    return all(
        not isinstance(want, int) or want == have
        for want, have in zip(expected, sample_shape, strict=True)
    )


def fit_to_input(
    data: TrainTestData, input_shape: Sequence[Dim] | None, input_name: str = "input"
) -> TrainTestData:
    """Check that the data fits a model input, reshaping built-in data to another layout.

    Built-in data sets list the sample shapes they may take in ``info["layouts"]`` (MNIST-1D
    is ``(40,)`` for an MLP and ``(1, 40)`` for a 1-D CNN); the first layout that fits the
    input is used. User data is never reshaped silently.

    Args:
        data: the data set.
        input_shape: the model input's shape including the batch dim, or ``None`` to skip.
        input_name: the input's name, for messages.

    Returns:
        ``data`` itself or a reshaped copy.

    Raises:
        DataError: no layout fits; the message names both shapes and what to do.
    """
    if input_shape is None or len(input_shape) == 0:
        return data
    if sample_fits(data.sample_shape, input_shape):
        return data
    for layout in data.info.get("layouts", ()):
        if sample_fits(layout, input_shape):
            return data.reshaped(tuple(layout))
    layouts = [tuple(layout) for layout in data.info.get("layouts", ())]
    also = f" (also available as {', '.join(map(str, layouts[1:]))})" if len(layouts) > 1 else ""
    wanted = format_shape(("N", *tuple(input_shape)[1:]))
    raise DataError(
        f"data {data.name!r} has samples of shape {data.sample_shape}{also} but model input "
        f"{input_name!r} expects {format_shape(input_shape)}; pass inputs shaped {wanted} "
        f"(e.g. x.reshape(len(x), ...)) or a model whose input fits the data"
    )


def class_count(model: Any) -> int | None:
    """The number of class scores of a model's first output, or None when it is not known.

    Args:
        model: an ``onnx.ModelProto`` or an object with ``.proto``.
    """
    proto: onnx.ModelProto = getattr(model, "proto", model)
    if not proto.graph.output:
        return None
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) < 2 or not all(dim.HasField("dim_value") for dim in dims[1:]):
        return None
    count = 1
    for dim in dims[1:]:
        count *= int(dim.dim_value)
    return count or None


def check_classes(model: Any, data: TrainTestData) -> None:
    """Refuse labels that the model's class scores cannot index (checked before any work).

    Args:
        model: the model whose first output holds the class scores.
        data: the data set.

    Raises:
        DataError: a label is at least the model's number of class scores.
    """
    outputs = class_count(model)
    if outputs is not None and outputs < data.num_classes:
        proto = getattr(model, "proto", model)
        raise DataError(
            f"model output {proto.graph.output[0].name!r} has {outputs} class scores but the labels of "
            f"{data.name!r} go up to {data.num_classes - 1}; use a model with {data.num_classes} outputs "
            "or relabel the data"
        )


_ACCEPTED_INPUTS = {
    onnx.TensorProto.UNDEFINED,
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.UINT64,
}


def check_float32_input(model: Any, what: str = "training and scoring") -> None:
    """Refuse a model whose data input is floating-point but not float32 (a half-precision export).

    Integer inputs (token ids into an embedding's Gather) are accepted: the data's values
    are cast to the input's integer type at the backend's boundary, and the weights are
    what training and scoring differentiate.

    Args:
        model: the model.
        what: the work that needs float32, for the message.

    Raises:
        DataError: the input's element type is known and neither float32 nor an integer.
    """
    proto: onnx.ModelProto = getattr(model, "proto", model)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if not inputs:
        return
    elem_type = inputs[0].type.tensor_type.elem_type
    if elem_type not in _ACCEPTED_INPUTS:
        kind = onnx.TensorProto.DataType.Name(elem_type)
        raise DataError(
            f"model input {inputs[0].name!r} is {kind}; {what} need a float32 model: export it in float32 "
            "(n2nonnx deploy --weights-fp16 makes the half-precision copy afterwards)"
        )
