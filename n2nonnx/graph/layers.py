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

from n2nonnx.errors import NoPrunableLayerError
from n2nonnx.graph.describe import describe_layer
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.records import CHAIN_OPS, LAYER_OPS, Edge, Layer
from n2nonnx.graph.trace import trace_edges
from n2nonnx.graph.wiring import attach_edges

__all__ = ["CHAIN_OPS", "LAYER_OPS", "Edge", "Layer", "find_layers"]


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
    edges, blockers = trace_edges(index, layers)
    return attach_edges(layers, edges, index, blockers)
