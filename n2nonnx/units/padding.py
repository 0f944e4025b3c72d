"""Padding of units: zero units appended to layers, the inverse of :mod:`.removal`.

Padding layer ``P`` by ``k`` units appends ``k`` output units whose weight rows and bias
are zero, then follows P's output forward like removal does and grows every tensor the
units travel through: BatchNorm gets scale 0, shift 0, mean 0, variance 1 for them (their
output stays 0), activations and pooling pass them, a residual Add needs every operand
padded alike, a Concat gives them their place in its segment, a Flatten / Reshape
spreads them over spatial positions, constant operands grow with a neutral fill. Every
layer that reads them gets zero input columns there, so the padded model computes
exactly what the input model does, only on wider tensors. Where ``f(0) != 0`` (Sigmoid)
an added unit carries a constant, which those zero columns ignore.

The pass walks the nodes in order; how each non-layer op is rewritten is its unit rule's
``pad`` (:mod:`n2nonnx.graph.units`). Where padding cannot stay exact (a graph output
would change shape, a LayerNorm or Softmax over the padded axis, an op that is not finite
at 0, operands padded differently, a grouped convolution) it is refused with a
:class:`~n2nonnx.errors.UnsupportedOpError` that names the node and why.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.layers import Layer
from n2nonnx.graph.units import Padding, rule_for
from n2nonnx.model import Model
from n2nonnx.units.removal import Editor


def pad_units(model: Model, counts: Mapping[str, int]) -> Model:
    """Append zero output units to layers, and matching zero inputs wherever they go.

    Args:
        model: the model (not modified).
        counts: layer name -> how many units to append to it.

    Returns:
        The wider model, shapes re-inferred; its outputs equal the input model's.

    Raises:
        InvalidArgumentError: unknown layer, or a count that is not an integer >= 0.
        UnsupportedOpError: the padding cannot stay exact (the message names the node
            and why; nothing is changed).
    """
    requested: dict[str, int] = {}
    for name, count in counts.items():
        try:
            layer = model.layer(name)
        except KeyError:
            raise InvalidArgumentError(
                f"pad_units: no layer named {name!r}; layers: {[la.name for la in model.layers]}"
            ) from None
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise InvalidArgumentError(
                f"pad_units: layer {layer.name!r} needs a count >= 0, got {count!r}"
            )
        if count:
            requested[layer.name] = int(count)
    if not requested:
        return model
    return model.with_proto(Padder(model, requested).run())


class Padder:
    """One pass over the nodes in order, carrying the :class:`Padding` of each tensor.

    It implements :class:`n2nonnx.graph.units.PadEditor`, what the op rules' ``pad``
    functions use; constants and the final model are handled by a removal
    :class:`~n2nonnx.units.removal.Editor` that removes nothing.
    """

    def __init__(self, model: Model, counts: dict[str, int]) -> None:
        self.model = model
        self.index = model.index
        self.counts = counts
        self.layers: dict[str, Layer] = {layer.name: layer for layer in model.layers}
        self.states: dict[str, Padding] = {}
        self._editor = Editor(model, {})
        self.nodes: list[onnx.NodeProto] = self._editor.nodes

    def run(self) -> onnx.ModelProto:
        """Rewrite every node; the new model (shapes re-inferred)."""
        for position, original in enumerate(self.index.nodes):
            node = onnx.NodeProto()
            node.CopyFrom(original)
            name = self.index.node_names[position]
            if name in self.layers:
                self._layer(node, self.layers[name])
                continue
            if not any(i in self.states for i in node.input):
                self.nodes.append(node)
                continue
            rule = rule_for(node.op_type)
            if rule is None or rule.pad is None:
                self.refuse(node, "has no padding rule")
                continue
            rule.pad(self, node, name)
        for output in self.index.graph_outputs:
            if output in self.states:
                raise UnsupportedOpError(
                    f"pad_units: added units reach graph output {output!r}, which would change shape"
                )
        return self._editor.assemble()

    # -- what the rules use ---------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        """The (possibly already rewritten) value of a constant."""
        return self._editor.value(name)

    def is_constant(self, name: str) -> bool:
        """True for an initializer or a constant the pass created."""
        return self._editor.is_constant(name)

    def set_constant(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Give input ``slot`` of ``node`` a new constant value (a private copy if it is shared)."""
        self._editor.set_constant(node, slot, value)

    def rank(self, name: str) -> int:
        """The rank of a tensor (raises where unknown)."""
        return self._editor.rank(name)

    def refuse(self, node: onnx.NodeProto, why: str) -> None:
        """Raise the error that says why the padding cannot pass ``node`` exactly."""
        raise UnsupportedOpError(f"pad_units: {node.op_type} {node.name or node.output[0]!r} {why}")

    # -- layers ---------------------------------------------------------------------------
    def _layer(self, node: onnx.NodeProto, layer: Layer) -> None:
        state = self.states.get(layer.input)
        count = self.counts.get(layer.name, 0)
        if state is not None and state.axis != layer.in_feature_axis:
            self.refuse(node, f"reads the added units along axis {state.axis}, not its features")
        if layer.groups > 1:
            self.refuse(node, f"is grouped ({layer.groups} groups); padding it is not supported")
        out = Padding(
            layer.out_feature_axis,
            np.concatenate([np.arange(layer.units), np.full(count, -1)]).astype(np.int64),
            layer.units,
        )

        def grow(array: np.ndarray) -> np.ndarray:
            if state is not None:
                array = state.grow(array, layer.in_axis)
            return out.grow(array, layer.unit_axis) if count else array

        slot = (
            1 if layer.op in ("Conv", "ConvTranspose") else 1 - list(node.input).index(layer.input)
        )
        if (
            not self.is_constant(node.input[slot])
            and self.index.producer_node(node.input[slot]) is None
        ):
            self.refuse(node, "has a weight that is not constant")
        self._editor.slice_constant(node, slot, grow, tuple(layer.weight_shape))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if count and has_bias and layer.op in ("Conv", "ConvTranspose", "Gemm"):
            self._grow_bias(node, layer, out)
        self.nodes.append(node)
        if count:
            self.states[node.output[0]] = out

    def _grow_bias(self, node: onnx.NodeProto, layer: Layer, out: Padding) -> None:
        if not self.is_constant(node.input[2]):
            self.refuse(node, "has a computed bias")
        bias = self.value(node.input[2])
        if bias.ndim >= 1 and bias.shape[-1] == layer.units:
            self.set_constant(node, 2, out.grow(bias, bias.ndim - 1))
        elif bias.size != 1:
            self.refuse(node, f"has a bias of shape {list(bias.shape)}")
