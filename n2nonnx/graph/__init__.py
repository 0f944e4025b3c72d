"""The graph layer: normalisation of an ONNX graph and the layer view a pruning tool needs."""

from n2nonnx.graph.layers import Edge, Layer, find_layers
from n2nonnx.graph.normalize import normalize

__all__ = ["Edge", "Layer", "find_layers", "normalize"]
