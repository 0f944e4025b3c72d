"""The layer view: which nodes are prunable layers, their units, chains, sizes and wiring.

A *layer* is a Conv (1-D/2-D/3-D, grouped, depthwise), ConvTranspose, Gemm or MatMul whose
weight is a constant (an initializer, possibly gated by an n2nonnx mask). Everything a
pruning tool needs about it is in :class:`Layer`; how layers feed each other (through
residual adds, concat, pooling, flatten/reshape, split/slice/gather) is in :class:`Edge`,
computed by :mod:`n2nonnx.graph.trace`. :func:`find_layers` builds the view: each layer is
recognised by :mod:`n2nonnx.graph.describe`, its edges traced by :mod:`n2nonnx.graph.trace`
and attached (with depths and skip targets) by :mod:`n2nonnx.graph.wiring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from n2nonnx.errors import NoPrunableLayerError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import ACTIVATIONS, UNIT_NORMS

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# Ops that may follow a layer's pre-activation and still belong to "the layer".
CHAIN_OPS = UNIT_NORMS | ACTIVATIONS | {"PRelu"}


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
    from n2nonnx.graph.describe import describe_layer
    from n2nonnx.graph.trace import trace_edges
    from n2nonnx.graph.wiring import attach_edges

    layers: list[Layer] = []
    for position, node in enumerate(index.nodes):
        if node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx"):
            layer = describe_layer(index, node, index.node_names[position], len(layers))
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
    return attach_edges(layers, edges, index)
