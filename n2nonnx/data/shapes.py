"""Matching a data set's sample shape to a model's graph input (batch dimension symbolic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from n2nonnx.data.dataset import TrainTestData
from n2nonnx.errors import DataError

Dim = int | str | None  # a known size, a symbolic name, or unknown


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
    tensor_type = value.type.tensor_type
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return ModelInput(value.name, tuple(dims), int(tensor_type.elem_type))


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
