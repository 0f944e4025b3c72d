"""A light read-only view of an ONNX graph: producers, consumers, constants and shapes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx
from onnx import numpy_helper

from n2nonnx import tags

Dim = int | str | None  # a static size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of a graph tensor."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str

    def static_shape(self, batch: int | None = None) -> tuple[int, ...] | None:
        """The shape with every dim known (dim 0 replaced by ``batch`` if given), else None."""
        if self.shape is None:
            return None
        dims = list(self.shape)
        if batch is not None and dims:
            dims[0] = batch
        static = [d for d in dims if isinstance(d, int)]
        return tuple(static) if len(static) == len(dims) else None


def value_info_dims(value: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    """The dims of a tensor's ValueInfo: a size, a symbolic name, or None where unknown.

    Args:
        value: a graph input, output or value_info entry.

    Returns:
        One entry per dim, or None when the ValueInfo carries no shape at all.
    """
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        int(dim.dim_value) if dim.HasField("dim_value") else (dim.dim_param or None)
        for dim in tensor_type.shape.dim
    )


def _value_info_to_tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    elem_type = value.type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "unknown"
    return TensorInfo(value.name, value_info_dims(value), dtype)


class GraphIndex:
    """Producers, consumers, initializers and shapes of one (normalised) graph.

    Args:
        proto: the model; it must not change while the index is in use.
    """

    def __init__(self, proto: onnx.ModelProto) -> None:
        graph = proto.graph
        self.proto = proto
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for position, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = position
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(position)
        self.initializers: dict[str, onnx.TensorProto] = {i.name: i for i in graph.initializer}
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in graph.output]
        self.infos: dict[str, TensorInfo] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            self.infos[value.name] = _value_info_to_tensor_info(value)
        for name, tensor in self.initializers.items():
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
            self.infos[name] = TensorInfo(name, tuple(int(d) for d in tensor.dims), dtype)
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        """The value of initializer ``name`` (cached, read-only)."""
        if name not in self._arrays:
            value = numpy_helper.to_array(self.initializers[name])
            value.setflags(write=False)
            self._arrays[name] = value
        return self._arrays[name]

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        """The inferred shape of tensor ``name``, or None if unknown."""
        info = self.infos.get(name)
        return info.shape if info else None

    def rank(self, name: str) -> int | None:
        """The number of dims of tensor ``name``, or None if its shape is unknown."""
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def is_constant(self, name: str) -> bool:
        """True for an initializer, or a masked initializer (``W * mask``)."""
        return self.weight_initializer(name) is not None

    def weight_initializer(self, name: str) -> str | None:
        """The initializer behind tensor ``name``: itself, or the weight of a mask Mul."""
        if name in self.initializers:
            return name
        position = self.producer.get(name)
        if position is None:
            return None
        node = self.nodes[position]
        if tags.role(node) == tags.MASK_APPLY and node.input[0] in self.initializers:
            return node.input[0]
        return None

    def consumer_nodes(self, name: str) -> list[onnx.NodeProto]:
        """The nodes that read tensor ``name``, in graph order (empty if none)."""
        return [self.nodes[p] for p in self.consumers.get(name, [])]

    def producer_node(self, name: str) -> onnx.NodeProto | None:
        """The node that writes tensor ``name``, or None for inputs and initializers."""
        position = self.producer.get(name)
        return None if position is None else self.nodes[position]

    @cached_property
    def node_names(self) -> list[str]:
        """A unique, non-empty name per node (the node's own name where it has one)."""
        seen: set[str] = set()
        names = []
        for position, node in enumerate(self.nodes):
            name = node.name or f"{node.op_type}_{position}"
            if name in seen:
                name = f"{name}#{position}"
            seen.add(name)
            names.append(name)
        return names

    @cached_property
    def batch_symbols(self) -> frozenset[str]:
        """Symbolic names of the graph inputs' batch dimension.

        The batch is dimension 0 where that is symbolic; otherwise the only symbolic
        dimension of the input, if there is exactly one (features-first layouts).
        """
        symbols = set()
        for name in self.graph_inputs:
            shape = self.shape(name) or ()
            symbolic = [d for d in shape if isinstance(d, str)]
            if shape and isinstance(shape[0], str):
                symbols.add(shape[0])
            elif len(symbolic) == 1:
                symbols.add(symbolic[0])
        return frozenset(symbols)

    def attribute(self, node: onnx.NodeProto, name: str, default=None):
        """Attribute ``name`` of ``node`` as a Python value, or ``default``."""
        for attribute in node.attribute:
            if attribute.name == name:
                return onnx.helper.get_attribute_value(attribute)
        return default
