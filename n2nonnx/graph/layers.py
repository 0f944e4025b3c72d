"""The layer view: which nodes are prunable layers, their units, chains, sizes and wiring.

A *layer* is a Conv (1-D/2-D/3-D, grouped, depthwise), ConvTranspose, Gemm or MatMul whose
weight is a constant (an initializer, possibly gated by an n2nonnx mask). Everything a
pruning tool needs about it is in :class:`Layer`; how layers feed each other (through
residual adds, concat, pooling, flatten/reshape, split/slice/gather) is in :class:`Edge`,
computed by :mod:`n2nonnx.graph.trace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from n2nonnx import tags
from n2nonnx.errors import NoPrunableLayerError, ShapeError, UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import ACTIVATIONS, UNIT_NORMS

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# Ops that may follow a layer's pre-activation and still belong to "the layer".
CHAIN_OPS = UNIT_NORMS | ACTIVATIONS | {"PRelu"}
_GATE_OPS = frozenset({"Sigmoid", "HardSigmoid", "Tanh"})  # x * gate(x): SiLU, hard-swish


@dataclass(frozen=True, eq=False)
class Edge:
    """A data path from one layer (or graph input) to another layer (or graph output).

    Attributes:
        source: layer name, or ``input:<graph input name>``.
        target: layer name, or ``output:<graph output name>``.
        via: op types crossed on the way, in order (``("Relu", "MaxPool", "Flatten")``).
        unit_map: one entry per input unit of the target (``target.in_units`` long): the
            source unit that feeds it, or -1 where another source feeds it. ``None`` when
            the mapping could not be followed (treat as every source unit feeding every
            target input unit).
    """

    source: str
    target: str
    via: tuple[str, ...]
    unit_map: np.ndarray | None

    def to_dict(self) -> dict:
        """The edge as JSON-ready data (``mapped`` tells whether a unit map was followed)."""
        return {
            "source": self.source,
            "target": self.target,
            "via": list(self.via),
            "mapped": self.unit_map is not None,
        }


@dataclass(frozen=True, eq=False)
class Layer:
    """One prunable layer of a normalised graph.

    Attributes:
        name: unique layer name (the node's name).
        op: ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul``.
        index: topological position among layers (0-based).
        depth: longest path from a graph input counted in layers (first layer: 1).
        weight: initializer name of the weight (the raw one, also when masked).
        bias: initializer name of the bias (Conv B, Gemm C, or a MatMul's bias Add), or None.
        weight_shape: shape of the weight.
        unit_axis: weight axis indexing output units (neurons / channels).
        in_axis: weight axis indexing input units.
        units: output neurons / channels.
        in_units: input features / channels of the data input.
        groups: convolution groups (1 for the others).
        fan_in: weights per output unit.
        input: the layer's data input tensor.
        preact: pre-activation output (after the bias Add where the bias is separate).
        output: the tensor after the normalisation / activation chain.
        chain: op types of that chain.
        in_feature_axis / out_feature_axis: tensor axis of the units in input / output.
        spatial_in / spatial_out: sizes other than batch and units (H, W; sequence; ()).
        feeds: edges to later layers and graph outputs.
        fed_by: edges from earlier layers and graph inputs.
        is_skip: the layer belongs to a skip branch (its node is tagged ``skip``, see
            :mod:`n2nonnx.tags`).
        merges_into: for a skip layer, the layer whose pre-activation (or chain, after its
            normalisation) its branch is added to; read from the graph.
    """

    name: str
    op: str
    index: int
    weight: str
    bias: str | None
    weight_shape: tuple[int, ...]
    unit_axis: int
    in_axis: int
    units: int
    in_units: int
    groups: int
    fan_in: int
    input: str
    preact: str
    output: str
    chain: tuple[str, ...]
    in_feature_axis: int
    out_feature_axis: int
    spatial_in: tuple[int, ...]
    spatial_out: tuple[int, ...]
    depth: int = 0
    feeds: tuple[Edge, ...] = field(default=())
    fed_by: tuple[Edge, ...] = field(default=())
    merges_into: str | None = None
    is_skip: bool = False

    @property
    def parameters(self) -> int:
        """Number of weights (bias excluded)."""
        return int(np.prod(self.weight_shape))

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Spatial kernel of a conv (``()`` for Gemm / MatMul)."""
        return self.weight_shape[2:] if self.op in ("Conv", "ConvTranspose") else ()

    def to_dict(self) -> dict:
        """JSON-able description (the schema of ``n2nonnx inspect --json``)."""
        return {
            "name": self.name,
            "op": self.op,
            "index": self.index,
            "depth": self.depth,
            "weight": self.weight,
            "bias": self.bias,
            "weight_shape": list(self.weight_shape),
            "parameters": self.parameters,
            "unit_axis": self.unit_axis,
            "in_axis": self.in_axis,
            "units": self.units,
            "in_units": self.in_units,
            "groups": self.groups,
            "fan_in": self.fan_in,
            "input": self.input,
            "preact": self.preact,
            "output": self.output,
            "chain": list(self.chain),
            "spatial_in": list(self.spatial_in),
            "spatial_out": list(self.spatial_out),
            "feeds": [e.to_dict() for e in self.feeds],
            "fed_by": [e.to_dict() for e in self.fed_by],
            "merges_into": self.merges_into,
        }


def find_layers(index: GraphIndex) -> list[Layer]:
    """All prunable layers of a normalised graph, in topological order, with their edges.

    Args:
        index: the graph (see :class:`GraphIndex`).

    Returns:
        The layers.

    Raises:
        NoPrunableLayerError: no layer has a constant weight.
        ShapeError: a layer's input has unknown dimensions besides the batch.
        UnsupportedOpError: an op of an unknown domain blocks shape inference upstream.
    """
    from n2nonnx.graph.trace import trace_edges

    layers: list[Layer] = []
    for position, node in enumerate(index.nodes):
        if node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx"):
            layer = _describe(index, node, index.node_names[position], len(layers))
            if layer is not None:
                layers.append(layer)
    if not layers:
        ops = sorted({n.op_type for n in index.nodes})
        raise NoPrunableLayerError(
            "the model has no prunable layer (Conv, ConvTranspose, Gemm, or MatMul with a "
            f"constant weight); its ops are {ops}. Export the model with its weights as "
            "initializers (not as graph inputs)"
        )
    edges = trace_edges(index, layers)
    return _attach_edges(layers, edges, index)


def _describe(index: GraphIndex, node: onnx.NodeProto, name: str, position: int) -> Layer | None:
    placement = _weight_placement(index, node)
    if placement is None:
        return None
    weight, data, unit_axis, in_axis, in_feature_axis, out_feature_axis = placement
    shape = tuple(int(d) for d in index.initializers[weight].dims)
    groups = int(index.attribute(node, "group", 1)) if node.op_type.startswith("Conv") else 1
    if node.op_type == "ConvTranspose":
        units, in_units = shape[1] * groups, shape[0]
    else:
        units = shape[unit_axis]
        in_units = shape[in_axis] * groups
    data_rank = _rank_or_fail(index, data, name)
    out_rank = index.rank(node.output[0]) or data_rank
    in_feature_axis %= data_rank
    out_feature_axis %= out_rank
    bias = None
    if (
        node.op_type in ("Conv", "ConvTranspose")
        and len(node.input) > 2
        and node.input[2]
        or node.op_type == "Gemm"
        and len(node.input) > 2
        and node.input[2]
    ):
        bias = index.weight_initializer(node.input[2])
    preact = node.output[0]
    if bias is None:
        bias, preact = _separate_bias(index, preact, units, out_rank, out_feature_axis)
    chain, output = _follow_chain(index, preact)
    spatial_in = _spatial(index, data, in_feature_axis, name)
    spatial_out = _spatial(index, preact, out_feature_axis, name)
    return Layer(
        name=name,
        op=node.op_type,
        index=position,
        weight=weight,
        bias=bias,
        weight_shape=shape,
        unit_axis=unit_axis,
        in_axis=in_axis,
        units=units,
        in_units=in_units,
        groups=groups,
        fan_in=int(np.prod(shape)) // max(units, 1),
        input=data,
        preact=preact,
        output=output,
        chain=chain,
        in_feature_axis=in_feature_axis,
        out_feature_axis=out_feature_axis,
        spatial_in=spatial_in,
        spatial_out=spatial_out,
        is_skip=tags.role(node) == tags.SKIP,
    )


def _weight_placement(index: GraphIndex, node: onnx.NodeProto):
    """(weight, data input, unit axis, in axis, data feature axis, output feature axis)."""
    inputs = list(node.input)
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = index.weight_initializer(inputs[1])
        if weight is None or index.is_constant(inputs[0]):
            return None
        if node.op_type == "Conv":
            return weight, inputs[0], 0, 1, 1, 1
        return weight, inputs[0], 1, 0, 1, 1
    left, right = (index.weight_initializer(inputs[0]), index.weight_initializer(inputs[1]))
    if node.op_type == "Gemm":
        trans_a = int(index.attribute(node, "transA", 0))
        trans_b = int(index.attribute(node, "transB", 0))
        if right is not None and left is None:
            unit_axis, in_axis = (0, 1) if trans_b else (1, 0)
            return right, inputs[0], unit_axis, in_axis, 0 if trans_a else 1, 1
        if left is not None and right is None:
            unit_axis, in_axis = (1, 0) if trans_a else (0, 1)
            return left, inputs[1], unit_axis, in_axis, 1 if trans_b else 0, 0
        return None
    # MatMul: only 2-D constant weights are layers (batched constant weights are not).
    if right is not None and left is None and len(index.initializers[right].dims) == 2:
        return right, inputs[0], 1, 0, -1, -1
    if left is not None and right is None and len(index.initializers[left].dims) == 2:
        return left, inputs[1], 0, 1, -2, -2
    return None


def _separate_bias(index, preact, units, out_rank, out_feature_axis):
    """An Add of a constant vector right after a bias-less layer is its bias (MatMul + Add)."""
    consumers = index.consumer_nodes(preact)
    if len(consumers) != 1 or preact in index.graph_outputs:
        return None, preact
    add = consumers[0]
    if add.op_type != "Add" or len(add.input) != 2:
        return None, preact
    other = add.input[1] if add.input[0] == preact else add.input[0]
    bias = index.weight_initializer(other)
    if bias is None:
        return None, preact
    shape = [int(d) for d in index.initializers[bias].dims]
    # Must broadcast along the output feature axis only.
    expected = [1] * (out_rank - out_feature_axis - 1)
    trailing = shape[len(shape) - len(expected) - 1 :] if len(shape) > len(expected) else None
    if trailing is None or trailing[0] != units or any(d != 1 for d in trailing[1:]):
        return None, preact
    if any(d != 1 for d in shape[: len(shape) - len(expected) - 1]):
        return None, preact
    return bias, add.output[0]


def _follow_chain(index: GraphIndex, preact: str) -> tuple[tuple[str, ...], str]:
    chain: list[str] = []
    tensor = preact
    while tensor not in index.graph_outputs:
        consumers = index.consumer_nodes(tensor)
        if (
            len(consumers) == 1
            and consumers[0].op_type in CHAIN_OPS
            or len(consumers) == 1
            and _joins_a_skip(index, consumers[0], tensor)
        ):
            node = consumers[0]
        elif len(consumers) == 2:  # x * gate(x)
            gate = [c for c in consumers if c.op_type in _GATE_OPS]
            mul = [c for c in consumers if c.op_type == "Mul"]
            if not (gate and mul and gate[0].output[0] in mul[0].input):
                break
            chain.extend([gate[0].op_type, "Mul"])
            tensor = mul[0].output[0]
            continue
        else:
            break
        if node.input[0] != tensor and node.op_type != "Add":
            break  # e.g. the tensor is a BatchNorm's scale, not its data
        chain.append(node.op_type)
        tensor = node.output[0]
    return tuple(chain), tensor


def _joins_a_skip(index: GraphIndex, node: onnx.NodeProto, tensor: str) -> bool:
    """The tagged Add that brings a skip branch into ``tensor`` (seen from the target's side)."""
    producer = index.producer_node(tensor)
    return tags.role(node) == tags.SKIP_JOIN and (
        producer is None or tags.role(producer) != tags.SKIP
    )


def _rank_or_fail(index: GraphIndex, tensor: str, layer: str) -> int:
    rank = index.rank(tensor)
    if rank is None:
        _blocked_by_custom_op(index, tensor, layer)
        raise ShapeError(
            f"layer {layer!r}: the shape of its input {tensor!r} is unknown; pass the input "
            "shapes (load(..., input_shapes={'x': (1, 3, 32, 32)}) or --input-shape x=1x3x32x32)"
        )
    return rank


def _spatial(index: GraphIndex, tensor: str, feature_axis: int, layer: str) -> tuple[int, ...]:
    """Sizes of ``tensor`` other than its batch and unit axes (H, W; sequence length; ())."""
    shape = index.shape(tensor)
    if shape is None:
        _rank_or_fail(index, tensor, layer)
        return ()
    batch_symbols = index.batch_symbols
    batch_axes = {a for a, d in enumerate(shape) if isinstance(d, str) and d in batch_symbols}
    if not batch_axes:
        batch_axes = {0}
    dims = [d for axis, d in enumerate(shape) if axis != feature_axis and axis not in batch_axes]
    if any(not isinstance(d, int) for d in dims):
        _blocked_by_custom_op(index, tensor, layer)
        raise ShapeError(
            f"layer {layer!r}: tensor {tensor!r} has shape {_fmt(shape)} with unknown sizes "
            "besides the batch; pass the input shapes (load(..., input_shapes={'x': (1, 3, 32, 32)}) "
            "or --input-shape x=1x3x32x32)"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _blocked_by_custom_op(index: GraphIndex, tensor: str, layer: str) -> None:
    """Raise if a node of a non-standard domain upstream of ``tensor`` hides its shape."""
    from n2nonnx.graph.normalize import STANDARD_DOMAINS

    stack, seen = [tensor], set()
    while stack:
        node = index.producer_node(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.domain not in STANDARD_DOMAINS:
            raise UnsupportedOpError(
                f"node {node.name or node.op_type!r} (op {node.op_type}, domain {node.domain!r}) "
                f"is not a standard ONNX op; shapes after it are unknown, so layer {layer!r} "
                "cannot be analysed. Export without custom ops, or pass --input-shape and "
                "make sure shape inference knows the op"
            )
        stack.extend(i for i in node.input if i)


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _attach_edges(layers: list[Layer], edges: list[Edge], index: GraphIndex) -> list[Layer]:
    from dataclasses import replace

    feeds: dict[str, list[Edge]] = {layer.name: [] for layer in layers}
    fed_by: dict[str, list[Edge]] = {layer.name: [] for layer in layers}
    for edge in edges:
        if edge.source in feeds:
            feeds[edge.source].append(edge)
        if edge.target in fed_by:
            fed_by[edge.target].append(edge)
    depth: dict[str, int] = {}
    for layer in layers:  # topological order
        sources = [depth[e.source] for e in fed_by[layer.name] if e.source in depth]
        depth[layer.name] = 1 + max(sources, default=0)
    by_preact = {layer.preact: layer.name for layer in layers if not layer.is_skip}
    layer_nodes = {layer.name for layer in layers}
    result = []
    for layer in layers:
        merges_into = None
        if layer.is_skip:
            merges_into = _skip_target(index, layer, by_preact, layer_nodes)
        result.append(
            replace(
                layer,
                depth=depth[layer.name],
                feeds=tuple(feeds[layer.name]),
                fed_by=tuple(fed_by[layer.name]),
                merges_into=merges_into,
            )
        )
    return result


def _skip_target(
    index: GraphIndex, layer: Layer, by_preact: dict[str, str], layer_nodes: set[str]
) -> str | None:
    """The layer whose pre-activation a skip layer's branch is added into.

    Read from the graph: walk forward from the skip layer's output through non-layer ops
    (activation, Sum, scatter ...) to the first ``Add`` whose other input is a sequential
    layer's pre-activation, or a tensor of its chain (after its BatchNorm).
    """
    stack, seen = [layer.output], {layer.output}
    while stack:
        tensor = stack.pop()
        for position in index.consumers.get(tensor, []):
            node = index.nodes[position]
            if index.node_names[position] in layer_nodes:
                continue  # another layer: the branch does not pass through layers
            if node.op_type == "Add":
                for other in node.input:
                    owner = _chain_owner(index, other, by_preact) if other != tensor else None
                    if owner is not None:
                        return owner
            for output in node.output:
                if output and output not in seen:
                    seen.add(output)
                    stack.append(output)
    return None


def _chain_owner(index: GraphIndex, tensor: str, by_preact: dict[str, str]) -> str | None:
    """The layer whose chain holds ``tensor`` (walking back through chain ops), or None."""
    for _ in range(len(CHAIN_OPS)):
        if tensor in by_preact:
            return by_preact[tensor]
        node = index.producer_node(tensor)
        if node is None or node.op_type not in CHAIN_OPS or not node.input:
            return None
        tensor = node.input[0]
    return None
