"""Refuse a constant ScatterND whose indices fall outside its data, before the folding.

A deployed model stores a sparse weight compactly (:mod:`n2nonnx.deployment.storage`): its
non-zero values and the gaps between their positions, rebuilt by the constant subgraph
``gaps -> Cast -> CumSum -> Unsqueeze -> ScatterND(zeros, ., values) -> Reshape``. When
the gaps are damaged (they run past the tensor), onnxruntime's folder logs raw warnings,
the graph is left unfolded and later stages meet an unknown weight or an IndexError. The
indices of such a ScatterND are computed here from the constants, with numpy, and checked
against the data's shape, so the load fails with one line naming the tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.errors import InvalidModelError

#: how many producers back a ScatterND's indices are followed
_MAX_DEPTH = 16


def check_constant_scatters(model: onnx.ModelProto) -> None:
    """Raise where a ScatterND's constant indices leave its constant-shaped data.

    Only ScatterNDs whose indices are computable from initializers (through Cast, CumSum,
    Unsqueeze, Identity, Constant) and whose data is an initializer or a ConstantOfShape
    of one are checked; any other is left to the runtime.

    Raises:
        InvalidModelError: naming the tensor the ScatterND builds, the bad position and the fix.
    """
    graph = model.graph
    scatters = [node for node in graph.node if node.op_type == "ScatterND"]
    if not scatters:
        return
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    evaluator = _Evaluator(initializers, producers)
    for node in scatters:
        if len(node.input) < 3:
            continue
        shape = evaluator.shape(node.input[0])
        if shape is None:
            continue
        indices = evaluator.value(node.input[1])
        if indices is None or indices.ndim < 1 or indices.dtype.kind not in "iu":
            continue
        depth = indices.shape[-1]
        if depth > len(shape) or indices.size == 0:
            continue
        for axis in range(depth):
            column = indices[..., axis].astype(np.int64)
            size = int(shape[axis])
            low, high = int(column.min()), int(column.max())
            if low >= -size and high < size:
                continue
            position = high if high >= size else low
            tensor = _built_tensor(node, consumers)
            sources = sorted(evaluator.leaves(node.input[1]))
            held = f" (from {', '.join(map(repr, sources))})" if sources else ""
            raise InvalidModelError(
                f"tensor {tensor!r} is corrupted: ScatterND {node.name or node.output[0]!r} "
                f"writes index {position} on an axis of {size}: its indices{held} run past the "
                "tensor (damaged compact storage of a deployed model); deploy the model it came "
                "from again (n2nonnx deploy SOURCE.onnx -o OUT.onnx)"
            )


def _built_tensor(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> str:
    """The name the ScatterND's output takes after a following Reshape (the weight)."""
    name = node.output[0]
    after = consumers.get(name, [])
    if len(after) == 1 and after[0].op_type == "Reshape" and after[0].input[0] == name:
        return after[0].output[0]
    return name


class _Evaluator:
    """Numpy values of the few constant ops that compute a ScatterND's indices."""

    def __init__(
        self, initializers: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]
    ) -> None:
        self.initializers = initializers
        self.producers = producers
        self.cache: dict[str, np.ndarray | None] = {}

    def shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.initializers:
            return tuple(int(d) for d in self.initializers[name].dims)
        node = self.producers.get(name)
        if node is not None and node.op_type == "ConstantOfShape" and node.input:
            dims = self.value(node.input[0])
            if dims is not None and dims.ndim == 1 and dims.dtype.kind in "iu":
                return tuple(int(d) for d in dims)
        return None

    def leaves(self, name: str, depth: int = 0) -> set[str]:
        """The non-scalar initializers ``name`` is computed from."""
        if name in self.initializers:
            return {name} if list(self.initializers[name].dims) not in ([], [1]) else set()
        node = self.producers.get(name)
        if node is None or depth > _MAX_DEPTH:
            return set()
        return set().union(*(self.leaves(i, depth + 1) for i in node.input if i))

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if name not in self.cache:
            self.cache[name] = self._compute(name, depth)
        return self.cache[name]

    def _compute(self, name: str, depth: int) -> np.ndarray | None:
        if name in self.initializers:
            tensor = self.initializers[name]
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                return None
            return numpy_helper.to_array(tensor)
        node = self.producers.get(name)
        if node is None or depth > _MAX_DEPTH:
            return None
        kernel = _KERNELS.get(node.op_type)
        if kernel is None:
            return None
        inputs = [self.value(i, depth + 1) if i else None for i in node.input]
        if any(value is None for value in inputs[:1]):
            return None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            return kernel(inputs, attributes)
        except (ValueError, TypeError, IndexError, KeyError):
            return None


def _cast(inputs: list, attributes: dict) -> np.ndarray:
    return inputs[0].astype(helper.tensor_dtype_to_np_dtype(attributes["to"]))


def _cumsum(inputs: list, attributes: dict) -> np.ndarray:
    if len(inputs) < 2 or inputs[1] is None:
        raise ValueError("no axis")
    axis = int(np.asarray(inputs[1]).reshape(-1)[0])
    values = inputs[0]
    if attributes.get("reverse"):
        values = np.flip(values, axis)
    total = np.cumsum(values, axis=axis, dtype=values.dtype)
    if attributes.get("exclusive"):
        total = total - values
    return np.flip(total, axis) if attributes.get("reverse") else total


def _unsqueeze(inputs: list, attributes: dict) -> np.ndarray:
    axes = attributes.get("axes")
    if axes is None:
        if len(inputs) < 2 or inputs[1] is None:
            raise ValueError("no axes")
        axes = [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
    rank = inputs[0].ndim + len(axes)
    return np.expand_dims(inputs[0], tuple(a % rank for a in axes))


def _constant(inputs: list, attributes: dict) -> np.ndarray:
    if "value" not in attributes:
        raise ValueError("not a tensor constant")
    return numpy_helper.to_array(attributes["value"])


_KERNELS: dict[str, Callable[[list, dict], np.ndarray]] = {
    "Cast": _cast,
    "CumSum": _cumsum,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda inputs, attributes: inputs[0],
    "Constant": _constant,
}
