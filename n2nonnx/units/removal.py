"""Removal of units: one transform that keeps every coupled tensor consistent.

Removing unit ``u`` of a layer deletes its row of the weight (and bias), then follows the
layer's output forward and deletes position ``u`` wherever it travels: the per-channel
parameters of BatchNorm and other affine ops, activations and pooling, the segment a
Concat gives it, Split sizes, the Flatten / Reshape block it becomes, N2NSkip Gathers
(their indices are renumbered, entries of removed units dropped), and finally the input
columns of every layer that reads it. A removed unit contributes nothing downstream:
the transform is exact for units whose contribution is already nothing (no path to an
output) and, in general, equals zeroing the unit's output.

Tensors joined element-wise (a residual Add, an N2NSkip Add, a gate Mul) must lose the same
positions in every operand; a request that breaks this is refused, naming the layers that
have to go together. Grouped and depthwise convolutions keep equal group sizes: a group
whose outputs all go disappears (``group`` shrinks); a group that loses some outputs must
lose as many as every other group. Where a layer needs fewer input channels than its
input tensor still carries (a depthwise conv losing a group whose input channel feeds
other layers), a ``Gather`` selects them.

The pass walks the nodes in order; how each non-layer op is rewritten is its unit rule's
``remove`` (:mod:`n2nonnx.graph.units`), and whether it can be is known beforehand from
:attr:`~n2nonnx.graph.Layer.removal_blocker`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.layers import Layer
from n2nonnx.graph.units import Layout, rule_for
from n2nonnx.model import Model

log = logging.getLogger(__name__)


def remove_units(model: Model, units: Mapping[str, Iterable[int]]) -> Model:
    """Remove output units of layers, and everything that only carried them; returns a new model.

    Args:
        model: the model (not modified). Masked weights are sliced with their masks.
        units: layer name (or weight name) -> indices of its output units to remove. A layer
            that loses every unit disappears with the nodes that only served it.

    Returns:
        The smaller model, shapes re-inferred. Outputs equal the input model's with the
        removed units' outputs taken as zero.

    Raises:
        InvalidArgumentError: unknown layer, unit out of range, a graph output would change
            shape, or coupled tensors would lose different units (the message names them).
        UnsupportedOpError: a removed unit reaches an op this transform cannot rewrite.
    """
    requested: dict[str, np.ndarray] = {}
    for name, indices in units.items():
        try:
            layer = model.layer(name)
        except KeyError:
            raise InvalidArgumentError(
                f"remove_units: no layer named {name!r}; layers: {[la.name for la in model.layers]}"
            ) from None
        chosen = np.unique(np.asarray(list(indices), dtype=np.int64))
        if chosen.size and (chosen.min() < 0 or chosen.max() >= layer.units):
            raise InvalidArgumentError(
                f"remove_units: layer {layer.name!r} has {layer.units} units, cannot remove {chosen.tolist()}"
            )
        if chosen.size:
            requested[layer.name] = chosen
    if not requested:
        return model
    editor = Editor(model, requested)
    return model.with_proto(editor.run())


class Editor:
    """One pass over the nodes in topological order, carrying the layout of each tensor.

    It implements :class:`n2nonnx.graph.units.UnitEditor`, what the op rules' ``remove``
    functions use.
    """

    def __init__(self, model: Model, requested: dict[str, np.ndarray]) -> None:
        self.model = model
        self.index = model.index
        self.requested = requested
        self.layers: dict[str, Layer] = {layer.name: layer for layer in model.layers}
        self.states: dict[str, Layout] = {}
        self.values: dict[str, np.ndarray] = {}  # initializer name -> new value
        self.sources: dict[str, str] = {}  # new initializer name -> the one it was made from
        self.nodes: list[onnx.NodeProto] = []

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        """Rewrite every node; the new model (shapes re-inferred)."""
        for position, original in enumerate(self.index.nodes):
            node = onnx.NodeProto()
            node.CopyFrom(original)
            name = self.index.node_names[position]
            if name in self.layers:
                self._layer(node, self.layers[name])
                continue
            touched = [i for i in node.input if i in self.states]
            if not touched:
                self.nodes.append(node)
                continue
            rule = rule_for(node.op_type)
            if rule is None or rule.remove is None:
                raise UnsupportedOpError(
                    f"remove_units: removed units reach op {node.op_type} (node {name!r}), which this "
                    "transform cannot rewrite; keep those units"
                )
            rule.remove(self, node, name)
        for output in self.index.graph_outputs:
            state = self.states.get(output)
            if state is not None:
                raise InvalidArgumentError(
                    f"remove_units: graph output {output!r} would lose {state.size - len(state.kept)} "
                    "positions; units that reach a graph output cannot be removed"
                )
        return self.assemble()

    def assemble(self) -> onnx.ModelProto:
        """The new model from the rewritten nodes and constants (shapes re-inferred)."""
        from n2nonnx.graph.normalize import infer_shapes
        from n2nonnx.tags import replace_tensor

        proto = onnx.ModelProto()
        proto.CopyFrom(self.model.proto)
        graph = proto.graph
        nodes = _live_nodes(self.nodes, set(self.index.graph_outputs))
        used = {name for node in nodes for name in node.input if name}
        old = {t.name: t for t in graph.initializer}
        initializers = []
        for tensor in graph.initializer:
            if tensor.name in used:
                if tensor.name in self.values:
                    replace_tensor(
                        tensor, numpy_helper.from_array(self.values[tensor.name], tensor.name)
                    )
                initializers.append(tensor)
        for name, value in self.values.items():
            if name in old or name not in used:
                continue
            tensor = numpy_helper.from_array(value, name)
            source = old.get(self.sources.get(name, ""))
            if source is not None:
                tensor.metadata_props.extend(source.metadata_props)
            initializers.append(tensor)
        del graph.initializer[:]
        graph.initializer.extend(initializers)
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.value_info[:]
        return infer_shapes(proto)

    # -- helpers --------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        """The (possibly already rewritten) value of a constant."""
        return self.values[name] if name in self.values else self.index.array(name)

    def is_constant(self, name: str) -> bool:
        """True for an initializer or a constant the pass created."""
        return name in self.index.initializers or name in self.values

    def set_constant(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Give input ``slot`` of ``node`` a new constant value (a private copy if it is shared)."""
        name = node.input[slot]
        shared = len(self.index.consumers.get(name, [])) > 1 or name in self.sources
        new = name
        if shared:
            new = f"{name}/{node.output[0]}"
            self.sources[new] = self.sources.get(name, name)
        self.values[new] = np.ascontiguousarray(value)
        node.input[slot] = new

    def rank(self, name: str) -> int:
        """The rank of a tensor (raises where unknown)."""
        rank = self.index.rank(name)
        if rank is None:
            raise UnsupportedOpError(
                f"remove_units: the rank of tensor {name!r} is unknown; pass input shapes at load"
            )
        return rank

    def size(self, name: str, axis: int) -> int | None:
        """A tensor's static size along ``axis``, or None."""
        shape = self.index.shape(name)
        dim = shape[axis] if shape is not None and axis < len(shape) else None
        return int(dim) if isinstance(dim, int) else None

    def slice_broadcast(
        self, node: onnx.NodeProto, slot: int, out_rank: int, state: Layout
    ) -> None:
        """Slice a constant operand of a broadcasting op along the units' axis."""
        value = self.value(node.input[slot])
        dim = state.axis - (out_rank - value.ndim)
        if 0 <= dim < value.ndim and value.shape[dim] == state.size and state.size > 1:
            self.set_constant(node, slot, np.take(value, state.kept, axis=dim))

    def select(self, tensor: str, axis: int, positions: np.ndarray, base: str) -> str:
        """Insert a Gather that keeps ``positions`` (physical indices) of ``tensor`` along ``axis``."""
        indices = f"{base}/kept_units"
        self.values[indices] = positions.astype(np.int64)
        output = f"{base}/selected"
        self.nodes.append(
            helper.make_node(
                "Gather", [tensor, indices], [output], name=f"{base}/select", axis=axis
            )
        )
        return output

    # -- layers ---------------------------------------------------------------------------
    def _layer(self, node: onnx.NodeProto, layer: Layer) -> None:
        removed = self.requested.get(layer.name, np.zeros(0, np.int64))
        out_kept = np.setdiff1d(np.arange(layer.units), removed)
        state = self.states.get(layer.input)
        if state is not None and state.axis != layer.in_feature_axis:
            raise UnsupportedOpError(
                f"remove_units: layer {layer.name!r} reads removed units along axis {state.axis}, "
                f"not its feature axis {layer.in_feature_axis}"
            )
        in_kept = state.kept if state is not None else np.arange(layer.in_units)
        if len(out_kept) == 0:
            self.states[node.output[0]] = Layout(layer.out_feature_axis, out_kept, layer.units)
            return  # the node goes; its consumers see a vanished tensor
        if len(in_kept) == 0:
            raise InvalidArgumentError(
                f"remove_units: layer {layer.name!r} would lose all its inputs but keep "
                f"{len(out_kept)} units; remove its units too"
            )
        slot = 1 if layer.op in ("Conv", "ConvTranspose") else _weight_slot(node, layer)
        if layer.groups > 1:
            if layer.op != "Conv":
                raise UnsupportedOpError(
                    f"remove_units: grouped {layer.op} {layer.name!r} is not supported"
                )
            in_kept = self._grouped(node, layer, out_kept, in_kept, state)
        else:
            self._slice_weight(node, slot, layer, out_kept, in_kept)
        if layer.op in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2 and node.input[2]:
            bias = self.value(node.input[2])
            if bias.ndim == 1 and bias.shape[0] == layer.units:
                self.set_constant(node, 2, bias[out_kept])
            elif bias.ndim >= 1:
                self.slice_broadcast(
                    node, 2, 2, Layout(layer.out_feature_axis, out_kept, layer.units)
                )
        self.nodes.append(node)
        if len(out_kept) < layer.units:
            self.states[node.output[0]] = Layout(layer.out_feature_axis, out_kept, layer.units)

    def _slice_weight(self, node, slot, layer, out_kept, in_kept, in_axis_kept=None) -> None:
        def take(array: np.ndarray) -> np.ndarray:
            if len(out_kept) < layer.weight_shape[layer.unit_axis]:
                array = np.take(array, out_kept, axis=layer.unit_axis)
            chosen = in_kept if in_axis_kept is None else in_axis_kept
            if len(chosen) < layer.weight_shape[layer.in_axis]:
                array = np.take(array, chosen, axis=layer.in_axis)
            return array

        self.slice_constant(node, slot, take, tuple(layer.weight_shape))

    def slice_constant(self, node, slot, take, shape) -> None:
        """Apply ``take`` to the constant in ``slot``.

        The constant is an initializer, or the constant subgraph (weight * mask, casts) that
        computes it; every initializer of that shape is sliced.
        """
        name = node.input[slot]
        if self.is_constant(name):
            value = self.value(name)
            if tuple(value.shape) == shape:
                self.set_constant(node, slot, take(value))
            return
        producer = self.index.producer_node(name)
        if producer is None:
            raise UnsupportedOpError(
                f"remove_units: the weight {name!r} of node {node.name!r} is not constant"
            )
        copy = next((n for n in self.nodes if n.output and n.output[0] == producer.output[0]), None)
        if copy is None:
            raise UnsupportedOpError(f"remove_units: weight producer {producer.name!r} not found")
        for position in range(len(copy.input)):
            if copy.input[position]:
                self.slice_constant(copy, position, take, shape)

    def _grouped(self, node, layer, out_kept, in_kept, state) -> np.ndarray:
        groups = layer.groups
        per_in, per_out = layer.in_units // groups, layer.units // groups
        alive, ins, outs = [], [], []
        for group in range(groups):
            o = out_kept[(out_kept >= group * per_out) & (out_kept < (group + 1) * per_out)]
            i = in_kept[(in_kept >= group * per_in) & (in_kept < (group + 1) * per_in)]
            if len(o) == 0:
                continue
            if len(i) == 0:
                raise InvalidArgumentError(
                    f"remove_units: group {group} of {layer.name!r} would lose its inputs but keep "
                    f"units {o.tolist()}; remove them too"
                )
            alive.append(group)
            ins.append(i)
            outs.append(o)
        if len({len(i) for i in ins}) > 1 or len({len(o) for o in outs}) > 1:
            raise InvalidArgumentError(
                f"remove_units: grouped conv {layer.name!r} would get groups of different sizes; "
                "remove the same number of units from every group, or whole groups"
            )
        needed = np.concatenate(ins)
        if len(needed) < len(in_kept):  # input channels of removed groups still in the tensor
            node.input[0] = self.select(
                node.input[0], 1, np.searchsorted(in_kept, needed), node.output[0]
            )
        local = np.concatenate([i - g * per_in for i, g in zip(ins, alive, strict=True)])
        columns = local.reshape(len(alive), -1)

        def take(array: np.ndarray) -> np.ndarray:
            blocks = [array[o][:, c] for o, c in zip(outs, columns, strict=True)]
            return np.concatenate(blocks, axis=0)

        self.slice_constant(node, 1, take, tuple(layer.weight_shape))
        for attribute in node.attribute:
            if attribute.name == "group":
                attribute.i = len(alive)
        return needed


def _weight_slot(node: onnx.NodeProto, layer: Layer) -> int:
    data = list(node.input).index(layer.input)
    return 1 - data


def _live_nodes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The nodes that contribute to a graph output, in their order."""
    needed = set(outputs)
    keep = [False] * len(nodes)
    for position in range(len(nodes) - 1, -1, -1):
        if any(o in needed for o in nodes[position].output if o):
            keep[position] = True
            needed.update(i for i in nodes[position].input if i)
    return [node for node, kept in zip(nodes, keep, strict=True) if kept]
