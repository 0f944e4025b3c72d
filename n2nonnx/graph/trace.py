"""Unit tracing: which units of which layer feed which input units of the next layers.

From every origin (a graph input, or a layer's pre-activation) a trace walks forward
through the non-layer ops until it reaches layers or graph outputs. It carries the axis
that holds the units and a *unit map* (for each position along that axis, the origin
unit found there, -1 for none). Each op family has a rule, registered in
:data:`RULES`; an op without a rule keeps the wiring but loses the map (``None``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.layers import Edge, Layer
from n2nonnx.graph.ops import REDUCTIONS, SAME_UNITS, UNIT_NORMS


@dataclass(frozen=True)
class Trace:
    """Where an origin's units are in one tensor: ``axis`` and ``unit_map`` (None: unknown)."""

    tensor: str
    axis: int | None
    unit_map: np.ndarray | None
    via: tuple[str, ...]


Outgoing = list[tuple[str, int | None, np.ndarray | None]]
Rule = Callable[[GraphIndex, onnx.NodeProto, Trace], Outgoing]
RULES: dict[str, Rule] = {}

# Inputs that carry data (the others are shapes, indices, scales ...).
DATA_INPUTS: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(
        [
            "Reshape",
            "Expand",
            "Tile",
            "Slice",
            "Gather",
            "GatherElements",
            "Pad",
            "Resize",
            "Upsample",
            "Split",
            "Clip",
            "Dropout",
            "BatchNormalization",
            "InstanceNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "Squeeze",
            "Unsqueeze",
            "TopK",
            "CumSum",
            *sorted(REDUCTIONS),
        ],
        (0,),
    ),
    "Where": (1, 2),
    "ScatterND": (0, 2),
    "ScatterElements": (0, 2),
}
NON_DATA_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "NonZero", "Range", "EyeLike"})


def rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register a tracing rule for op types ``ops``."""

    def register(function: Rule) -> Rule:
        for op in ops:
            if op in RULES:
                raise ValueError(f"tracing rule for {op} registered twice")
            RULES[op] = function
        return function

    return register


def trace_edges(index: GraphIndex, layers: list[Layer]) -> list[Edge]:
    """All edges from graph inputs and layers to the layers / graph outputs they reach."""
    names = {layer.name: layer for layer in layers}
    layer_at: dict[int, Layer] = {
        position: names[name] for position, name in enumerate(index.node_names) if name in names
    }
    edges: list[Edge] = []
    for name in index.graph_inputs:
        axis = _input_feature_axis(index, name, layers)
        edges += _walk(index, f"input:{name}", name, axis, layer_at)
    for name in embedding_outputs(index):  # token ids carry no units: the table's rows do
        edges += _walk(
            index, f"input:{name}", name, _input_feature_axis(index, name, layers), layer_at
        )
    for layer in layers:
        edges += _walk(index, layer.name, layer.preact, layer.out_feature_axis, layer_at)
    return edges


def embedding_outputs(index: GraphIndex) -> list[str]:
    """Outputs of embedding lookups: a Gather of rows of a constant 2-D float table.

    The rows are picked by indices computed from the graph inputs. Such outputs are the
    network's inputs as far as units go (integer token ids have none), named
    ``input:<tensor>`` in edges.

    Args:
        index: the graph.

    Returns:
        The lookup outputs, in graph order.
    """
    found = []
    for node in index.nodes:
        if (
            node.op_type != "Gather"
            or len(node.input) < 2
            or node.input[0] not in index.initializers
        ):
            continue
        table = index.initializers[node.input[0]]
        if len(table.dims) != 2 or int(index.attribute(node, "axis", 0)) != 0:
            continue
        if table.data_type not in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.FLOAT16,
        ):
            continue
        if index.is_constant(node.input[1]):
            continue
        found.append(node.output[0])
    return found


def input_units(index: GraphIndex, name: str, layers: list[Layer]) -> int | None:
    """Units of graph input ``name``: its size on the axis its first layers read units from.

    Args:
        index: the graph.
        name: a graph input.
        layers: the layers of the graph.

    Returns:
        The number of input units, or None where the shape is unknown.
    """
    return _size(index, name, _input_feature_axis(index, name, layers))


def _input_feature_axis(index: GraphIndex, name: str, layers: list[Layer]) -> int | None:
    view = input_view(index, name, layers)
    if view is not None:
        return view[2]
    rank = index.rank(name)
    if rank is None:
        return None
    convolutional = any(layer.op in ("Conv", "ConvTranspose") for layer in layers)
    return 1 if convolutional and rank >= 3 else rank - 1


# Ops between a graph input and its first layer that keep every axis (or permute them).
_LAYOUT_OPS = frozenset(
    {
        "Transpose",
        "Cast",
        "Identity",
        "Dropout",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Neg",
        "Abs",
        "BatchNormalization",
        "InstanceNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Clip",
    }
)


def input_view(index: GraphIndex, name: str, layers: list[Layer]) -> tuple[str, int, int] | None:
    """How the first layer reads graph input ``name``, through layout ops.

    Layout ops are an exporter's Transpose of a channels-last image, a Cast, a normalising
    Sub / Div and the like.

    Args:
        index: the graph.
        name: a graph input.
        layers: the layers of the graph.

    Returns:
        ``(tensor, axis, input_axis)``: the tensor the layer reads, its unit axis there, and
        the input's axis that becomes it (``3`` for an NHWC image transposed to NCHW); None
        when no layer reads the input through such ops alone.
    """
    rank = index.rank(name)
    by_input: dict[str, Layer] = {}
    for candidate in layers:
        by_input.setdefault(candidate.input, candidate)
    if rank is None:
        return None
    queue = deque([(name, list(range(rank)))])  # axis of the tensor -> axis of the input
    seen = {name}
    while queue:
        tensor, axes = queue.popleft()
        layer = by_input.get(tensor)
        if layer is not None and layer.in_feature_axis < len(axes):
            return tensor, layer.in_feature_axis, axes[layer.in_feature_axis]
        for node in index.consumer_nodes(tensor):
            output = node.output[0] if node.output else ""
            if node.op_type not in _LAYOUT_OPS or not output or output in seen:
                continue
            if node.op_type == "Transpose":
                perm = index.attribute(node, "perm")
                perm = list(perm) if perm is not None else list(reversed(range(len(axes))))
                if len(perm) != len(axes):
                    continue
                moved = [axes[p] for p in perm]
            elif index.rank(output) == len(axes) and node.input[0] == tensor:
                moved = axes
            else:
                continue
            seen.add(output)
            queue.append((output, moved))
    return None


def _walk(index, origin, tensor, axis, layer_at) -> list[Edge]:
    size = _size(index, tensor, axis)
    unit_map = np.arange(size) if size is not None else None
    queue = deque([Trace(tensor, axis, unit_map, ())])
    seen = {tensor}
    edges: list[Edge] = []
    while queue:
        trace = queue.popleft()
        if trace.tensor in index.graph_outputs:
            edges.append(Edge(origin, f"output:{trace.tensor}", trace.via, trace.unit_map))
        for position in index.consumers.get(trace.tensor, []):
            node = index.nodes[position]
            layer = layer_at.get(position)
            if layer is not None:  # traces stop at layers (a weight slot is not an input)
                if layer.input == trace.tensor:
                    edges.append(Edge(origin, layer.name, trace.via, _fit(trace, layer)))
                continue
            if node.op_type in NON_DATA_OPS:
                continue  # shape metadata, not data
            slots = DATA_INPUTS.get(node.op_type)
            if slots is not None and not any(
                s < len(node.input) and node.input[s] == trace.tensor for s in slots
            ):
                continue
            for output, out_axis, out_map in RULES.get(node.op_type, _unknown)(index, node, trace):
                if output and output not in seen:
                    seen.add(output)
                    queue.append(Trace(output, out_axis, out_map, (*trace.via, node.op_type)))
    return edges


def _fit(trace: Trace, layer: Layer) -> np.ndarray | None:
    if trace.unit_map is None or trace.axis != layer.in_feature_axis:
        return None
    if len(trace.unit_map) != layer.in_units:
        return None
    return trace.unit_map


def _size(index: GraphIndex, tensor: str, axis: int | None) -> int | None:
    shape = index.shape(tensor)
    if shape is None or axis is None or axis >= len(shape):
        return None
    size = shape[axis]
    return size if isinstance(size, int) else None


def _unknown(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    in_rank = index.rank(trace.tensor)
    result: Outgoing = []
    for output in node.output:
        same_rank = in_rank is not None and index.rank(output) == in_rank
        result.append((output, trace.axis if same_rank else None, None))
    return result


@rule(
    *sorted(SAME_UNITS | UNIT_NORMS),
    "LayerNormalization",
    "GroupNormalization",
    "Softmax",
    "LogSoftmax",
    "LpNormalization",
    "Expand",
    "Tile",
    "CumSum",
)
def _same_units(index, node, trace) -> Outgoing:
    """Ops that keep the unit axis (values or spatial sizes may change, units do not)."""
    output = node.output[0]
    if (
        trace.axis is not None
        and trace.unit_map is not None
        and _size(index, output, trace.axis) not in (None, len(trace.unit_map))
    ):
        return [(output, trace.axis, None)]
    return [(output, trace.axis, trace.unit_map)]


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "And", "Or")
def _broadcast(index, node, trace) -> Outgoing:
    """Element-wise ops with numpy broadcasting: units stay, the axis shifts with rank."""
    output = node.output[0]
    in_rank, out_rank = index.rank(trace.tensor), index.rank(output)
    if trace.axis is None or in_rank is None or out_rank is None:
        return [(output, None, None)]
    axis = trace.axis + out_rank - in_rank
    unit_map = trace.unit_map
    if unit_map is not None and _size(index, output, axis) not in (None, len(unit_map)):
        unit_map = None  # a single unit broadcast over many
    return [(output, axis, unit_map)]


@rule("Transpose")
def _transpose(index, node, trace) -> Outgoing:
    rank = index.rank(trace.tensor)
    perm = index.attribute(node, "perm")
    if trace.axis is None or rank is None:
        return [(node.output[0], None, None)]
    perm = list(perm) if perm is not None else list(reversed(range(rank)))
    return [(node.output[0], perm.index(trace.axis), trace.unit_map)]


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(index, node, trace) -> Outgoing:
    """Follow units through a reshape by reshaping a tensor of unit labels (batch set to 1)."""
    output = node.output[0]
    in_shape, out_shape = index.shape(trace.tensor), index.shape(output)
    if trace.axis is None or in_shape is None or out_shape is None:
        return [(output, None, None)]
    in_dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(in_shape)]
    out_dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(out_shape)]
    if not all(isinstance(d, int) for d in in_dims + out_dims):
        return [(output, None, None)]
    if int(np.prod(in_dims)) != int(np.prod(out_dims)) or int(np.prod(in_dims)) > 4_000_000:
        return [(output, None, None)]
    labels_along_axis = (
        trace.unit_map if trace.unit_map is not None else np.arange(in_dims[trace.axis])
    )
    coordinates = np.indices(in_dims, sparse=True)[trace.axis]
    labels = np.broadcast_to(
        labels_along_axis[coordinates.ravel()].reshape(coordinates.shape), in_dims
    )
    labels = labels.reshape(out_dims)
    # Prefer a non-batch axis of the traced axis's size (a single unit reshaped stays off axis 0).
    want = in_dims[trace.axis]
    rest = range(1, len(out_dims))
    candidates = (
        [a for a in rest if out_dims[a] == want] + [a for a in rest if out_dims[a] != want] + [0]
    )
    for axis in candidates:
        line = np.moveaxis(labels, axis, 0).reshape(out_dims[axis], -1)
        if np.all(line == line[:, :1]):
            unit_map = line[:, 0].copy() if trace.unit_map is not None else None
            if trace.unit_map is None and out_dims[axis] != in_dims[trace.axis]:
                return [(output, axis, None)]
            return [(output, axis, unit_map)]
    return [(output, None, None)]


@rule("Concat")
def _concat(index, node, trace) -> Outgoing:
    output = node.output[0]
    rank = index.rank(output)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    axis = int(index.attribute(node, "axis")) % rank
    if axis != trace.axis or trace.unit_map is None:
        return [(output, trace.axis, trace.unit_map if axis != trace.axis else None)]
    pieces = []
    for name in node.input:
        if name == trace.tensor:
            pieces.append(trace.unit_map)
            continue
        size = _size(index, name, axis)
        if size is None:
            return [(output, axis, None)]
        pieces.append(np.full(size, -1))
    return [(output, axis, np.concatenate(pieces))]


@rule("Split")
def _split(index, node, trace) -> Outgoing:
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(o, None, None) for o in node.output]
    axis = int(index.attribute(node, "axis", 0)) % rank
    if axis != trace.axis:
        return [(o, trace.axis, trace.unit_map) for o in node.output]
    sizes = [_size(index, o, axis) for o in node.output]
    if trace.unit_map is None or any(s is None for s in sizes):
        return [(o, axis, None) for o in node.output]
    bounds = np.cumsum([0, *sizes])
    return [
        (o, axis, trace.unit_map[a:b])
        for o, a, b in zip(node.output, bounds[:-1], bounds[1:], strict=True)
    ]


@rule("Slice")
def _slice(index, node, trace) -> Outgoing:
    output = node.output[0]
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    constant = [index.array(n) if n in index.initializers else None for n in node.input[1:]]
    if len(node.input) == 1:  # opset < 10: attributes
        starts, ends = index.attribute(node, "starts"), index.attribute(node, "ends")
        axes, steps = index.attribute(node, "axes"), None
    else:
        if any(c is None for c in constant):
            return [(output, trace.axis, None)]
        starts, ends = constant[0], constant[1]
        axes = constant[2] if len(constant) > 2 else None
        steps = constant[3] if len(constant) > 3 else None
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    if trace.axis not in axes:
        return [(output, trace.axis, trace.unit_map)]
    if trace.unit_map is None:
        return [(output, trace.axis, None)]
    k = axes.index(trace.axis)
    step = int(steps[k]) if steps is not None else 1
    chosen = np.arange(len(trace.unit_map))[slice(int(starts[k]), int(ends[k]), step)]
    return [(output, trace.axis, trace.unit_map[chosen])]


@rule("Gather")
def _gather(index, node, trace) -> Outgoing:
    output = node.output[0]
    rank = index.rank(trace.tensor)
    indices_name = node.input[1]
    if trace.axis is None or rank is None or indices_name not in index.initializers:
        return [(output, None, None)]
    axis = int(index.attribute(node, "axis", 0)) % rank
    indices = index.array(indices_name)
    if axis != trace.axis:
        shift = indices.ndim - 1 if trace.axis > axis else 0
        return [(output, trace.axis + shift, trace.unit_map)]
    if indices.ndim != 1:
        return [(output, None, None)]
    unit_map = None if trace.unit_map is None else trace.unit_map[indices.astype(np.int64)]
    return [(output, axis, unit_map)]


@rule("MatMul", "Gemm")
def _dynamic_matmul(index, node, trace) -> Outgoing:
    """A product of two activations (attention): units survive on the right operand only."""
    output = node.output[0]
    rank, out_rank = index.rank(trace.tensor), index.rank(output)
    if (
        node.op_type == "MatMul"
        and node.input[1] == trace.tensor
        and rank
        and out_rank
        and trace.axis == rank - 1
    ):
        return [(output, out_rank - 1, trace.unit_map)]
    return [(output, (out_rank - 1) if out_rank else None, None)]


@rule(
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
def _reduce(index, node, trace) -> Outgoing:
    output = node.output[0]
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    axes = index.attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in index.initializers:
        axes = index.array(node.input[1]).tolist()
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    if trace.axis in axes:
        return [(output, None, None)]
    keepdims = int(index.attribute(node, "keepdims", 1))
    axis = trace.axis if keepdims else trace.axis - sum(a < trace.axis for a in axes)
    return [(output, axis, trace.unit_map)]
