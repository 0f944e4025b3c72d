"""Structured removal of units: one transform that keeps every coupled tensor consistent.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.layers import Layer
from n2nonnx.graph.ops import SAME_UNITS, UNIT_NORMS
from n2nonnx.model import Model

log = logging.getLogger(__name__)


PER_CHANNEL = UNIT_NORMS
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"})
RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass(frozen=True)
class Layout:
    """Which original positions along ``axis`` a tensor still holds (``kept``, ascending)."""

    axis: int
    kept: np.ndarray
    size: int

    @property
    def vanished(self) -> bool:
        """Every position is gone: the tensor contributes nothing."""
        return len(self.kept) == 0


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
    editor = _Editor(model, requested)
    return model.with_proto(editor.run())


class _Editor:
    """One pass over the nodes in topological order, carrying the layout of each tensor."""

    def __init__(self, model: Model, requested: dict[str, np.ndarray]) -> None:
        self.model = model
        self.index = model.index
        self.requested = requested
        self.layers: dict[str, Layer] = {layer.name: layer for layer in model.layers}
        self.states: dict[str, Layout] = {}
        self.values: dict[str, np.ndarray] = {}  # initializer name -> new value
        self.sources: dict[str, str] = {}  # new initializer name -> the one it was made from
        self.nodes: list[onnx.NodeProto] = []
        self.rules: dict[str, Callable[[onnx.NodeProto, str], None]] = {
            **dict.fromkeys(SAME_UNITS, self._same),
            **dict.fromkeys(PER_CHANNEL, self._per_channel),
            **dict.fromkeys(ELEMENTWISE, self._elementwise),
            **dict.fromkeys(RESHAPES, self._reshape),
            "Concat": self._concat,
            "Split": self._split,
            "Slice": self._slice,
            "Gather": self._gather,
            "Transpose": self._transpose,
        }

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
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
            rule = self.rules.get(node.op_type)
            if rule is None:
                raise UnsupportedOpError(
                    f"remove_units: removed units reach op {node.op_type} (node {name!r}), which this "
                    "transform cannot rewrite; keep those units"
                )
            rule(node, name)
        for output in self.index.graph_outputs:
            state = self.states.get(output)
            if state is not None:
                raise InvalidArgumentError(
                    f"remove_units: graph output {output!r} would lose {state.size - len(state.kept)} "
                    "positions; units that reach a graph output cannot be removed"
                )
        return self._assemble()

    def _assemble(self) -> onnx.ModelProto:
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
    def _value(self, name: str) -> np.ndarray:
        return self.values[name] if name in self.values else self.index.array(name)

    def _is_constant(self, name: str) -> bool:
        return name in self.index.initializers or name in self.values

    def _set_constant(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Give input ``slot`` of ``node`` a new constant value (a private copy if it is shared)."""
        name = node.input[slot]
        shared = len(self.index.consumers.get(name, [])) > 1 or name in self.sources
        new = name
        if shared:
            new = f"{name}/{node.output[0]}"
            self.sources[new] = self.sources.get(name, name)
        self.values[new] = np.ascontiguousarray(value)
        node.input[slot] = new

    def _rank(self, name: str) -> int:
        rank = self.index.rank(name)
        if rank is None:
            raise UnsupportedOpError(
                f"remove_units: the rank of tensor {name!r} is unknown; pass input shapes at load"
            )
        return rank

    def _size(self, name: str, axis: int) -> int | None:
        shape = self.index.shape(name)
        dim = shape[axis] if shape is not None and axis < len(shape) else None
        return int(dim) if isinstance(dim, int) else None

    def _slice_broadcast(
        self, node: onnx.NodeProto, slot: int, out_rank: int, state: Layout
    ) -> None:
        """Slice a constant operand of a broadcasting op along the units' axis."""
        value = self._value(node.input[slot])
        dim = state.axis - (out_rank - value.ndim)
        if 0 <= dim < value.ndim and value.shape[dim] == state.size and state.size > 1:
            self._set_constant(node, slot, np.take(value, state.kept, axis=dim))

    def _select(self, tensor: str, axis: int, positions: np.ndarray, base: str) -> str:
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
            bias = self._value(node.input[2])
            if bias.ndim == 1 and bias.shape[0] == layer.units:
                self._set_constant(node, 2, bias[out_kept])
            elif bias.ndim >= 1:
                self._slice_broadcast(
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

        self._slice_constant(node, slot, take, tuple(layer.weight_shape))

    def _slice_constant(self, node, slot, take, shape) -> None:
        """Apply ``take`` to the constant in ``slot``.

        The constant is an initializer, or the constant subgraph (weight * mask, casts) that
        computes it; every initializer of that shape is sliced.
        """
        name = node.input[slot]
        if self._is_constant(name):
            value = self._value(name)
            if tuple(value.shape) == shape:
                self._set_constant(node, slot, take(value))
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
                self._slice_constant(copy, position, take, shape)

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
            node.input[0] = self._select(
                node.input[0], 1, np.searchsorted(in_kept, needed), node.output[0]
            )
        local = np.concatenate([i - g * per_in for i, g in zip(ins, alive, strict=True)])
        columns = local.reshape(len(alive), -1)

        def take(array: np.ndarray) -> np.ndarray:
            blocks = [array[o][:, c] for o, c in zip(outs, columns, strict=True)]
            return np.concatenate(blocks, axis=0)

        self._slice_constant(node, 1, take, tuple(layer.weight_shape))
        for attribute in node.attribute:
            if attribute.name == "group":
                attribute.i = len(alive)
        return needed

    # -- non-layer ops --------------------------------------------------------------------
    def _same(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None:
            raise UnsupportedOpError(
                f"remove_units: removed units reach a parameter input of {node.op_type} {name!r}"
            )
        if (
            node.op_type == "Pad"
            and len(node.input) > 1
            and node.input[1] in self.index.initializers
        ):
            pads = self._value(node.input[1])
            rank = len(pads) // 2
            if pads[state.axis] or pads[state.axis + rank]:
                raise UnsupportedOpError(f"remove_units: Pad {name!r} pads the units' axis")
        self.states[node.output[0]] = state
        if not state.vanished:
            self.nodes.append(node)

    def _per_channel(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None or state.axis != 1:
            raise UnsupportedOpError(
                f"remove_units: {node.op_type} {name!r} must normalise along the units' axis"
            )
        self.states[node.output[0]] = state
        if state.vanished:
            return
        for slot in range(1, len(node.input)):
            if node.input[slot]:
                self._set_constant(node, slot, self._value(node.input[slot])[state.kept])
        self.nodes.append(node)

    def _elementwise(self, node: onnx.NodeProto, name: str) -> None:
        out_rank = self._rank(node.output[0])
        axis, size, vanished = self._joined_axis(node, name, out_rank)
        operands = self._elementwise_operands(node, out_rank, axis, size, vanished)
        if vanished:
            remaining = self._without_vanished(node, name, vanished, axis, size)
            if remaining is None:
                return
            node = remaining
        sets = {tuple(k.tolist()) for k in operands.values()}
        if len(sets) > 1:
            raise InvalidArgumentError(_coupling_message(self, node, name, operands, axis))
        kept = next(iter(operands.values())) if operands else np.zeros(0, np.int64)
        state = Layout(axis, kept, size)
        for slot, tensor in enumerate(node.input):
            if tensor and self._is_constant(tensor):
                self._slice_broadcast(node, slot, out_rank, state)
        self.states[node.output[0]] = state
        self.nodes.append(node)

    def _joined_axis(
        self, node: onnx.NodeProto, name: str, out_rank: int
    ) -> tuple[int, int, list[int]]:
        """Where an element-wise node's operands carry removed units.

        Args:
            node: the element-wise node.
            name: its name, for messages.
            out_rank: the rank of its output.

        Returns:
            The units' axis in the output, the original number of units along it, and the
            slots of the operands that lose every unit.

        Raises:
            UnsupportedOpError: operands carry removed units along different axes.
        """
        axis: int | None = None
        size = 0
        vanished: list[int] = []
        for slot, tensor in enumerate(node.input):
            state = self.states.get(tensor)
            if state is None:
                continue
            aligned = state.axis + out_rank - self._rank(tensor)
            if axis not in (None, aligned):
                raise UnsupportedOpError(
                    f"remove_units: {node.op_type} {name!r} joins units on different axes"
                )
            axis, size = aligned, state.size
            if state.vanished:
                vanished.append(slot)
        if axis is None:  # the driver calls a rule only for nodes that removed units reach
            raise UnsupportedOpError(
                f"remove_units: no removed units reach {node.op_type} {name!r}"
            )
        return axis, size, vanished

    def _elementwise_operands(
        self, node: onnx.NodeProto, out_rank: int, axis: int, size: int, vanished: list[int]
    ) -> dict[int, np.ndarray]:
        """Slot -> the original positions along the units' axis of each non-constant operand.

        Operands broadcast along the units' axis (size 1 there, or of lower rank) have none;
        constants and vanished operands are left out.
        """
        operands: dict[int, np.ndarray] = {}
        for slot, tensor in enumerate(node.input):
            if not tensor or self._is_constant(tensor) or slot in vanished:
                continue
            state = self.states.get(tensor)
            if state is not None:
                operands[slot] = state.kept
                continue
            dim = axis - (out_rank - self._rank(tensor))
            if dim >= 0 and self._size(tensor, dim) != 1:
                operands[slot] = np.arange(size)
        return operands

    def _without_vanished(
        self, node: onnx.NodeProto, name: str, vanished: list[int], axis: int, size: int
    ) -> onnx.NodeProto | None:
        """Drop the operands that lose every unit from a sum; a product of one vanishes.

        Args:
            node: the element-wise node.
            name: its name, for messages.
            vanished: slots of the operands that lose every unit.
            axis: the units' axis in the output.
            size: the original number of units along it.

        Returns:
            The node to keep (an Identity where one operand remains), or ``None`` where the
            output vanishes too (its layout is recorded).

        Raises:
            UnsupportedOpError: an op other than Add, Sum or Mul loses an operand entirely.
        """
        if node.op_type == "Mul":
            self.states[node.output[0]] = Layout(axis, np.zeros(0, np.int64), size)
            return None
        if node.op_type not in ("Add", "Sum"):
            raise UnsupportedOpError(
                f"remove_units: every unit of an operand of {node.op_type} {name!r} would go"
            )
        remaining = [node.input[s] for s in range(len(node.input)) if s not in vanished]
        if not remaining:
            self.states[node.output[0]] = Layout(axis, np.zeros(0, np.int64), size)
            return None
        if len(remaining) == 1:
            return helper.make_node("Identity", remaining, list(node.output), name=node.name)
        del node.input[:]
        node.input.extend(remaining)
        return node

    def _concat(self, node: onnx.NodeProto, name: str) -> None:
        rank = self._rank(node.output[0])
        concat_axis = int(self.index.attribute(node, "axis")) % rank
        states = [self.states.get(t) for t in node.input]
        axis = next(s.axis for s in states if s is not None)
        if concat_axis != axis:
            self._elementwise_like_same(node, name, states)
            return
        pieces, offset, inputs = [], 0, []
        for tensor, state in zip(node.input, states, strict=True):
            size = state.size if state is not None else self._size(tensor, axis)
            if size is None:
                raise UnsupportedOpError(
                    f"remove_units: Concat {name!r}: size of {tensor!r} unknown"
                )
            kept = state.kept if state is not None else np.arange(size)
            if len(kept):
                inputs.append(tensor)
                pieces.append(kept + offset)
            offset += size
        kept = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        self.states[node.output[0]] = Layout(axis, kept, offset)
        if inputs:
            del node.input[:]
            node.input.extend(inputs)
            self.nodes.append(node)

    def _elementwise_like_same(self, node, name, states) -> None:
        kept = {tuple(s.kept.tolist()) for s in states if s is not None}
        if len(kept) != 1 or any(s is None for s in states):
            raise InvalidArgumentError(
                f"remove_units: {node.op_type} {name!r} joins tensors that lose different units"
            )
        state = next(s for s in states if s is not None)
        self.states[node.output[0]] = state
        self.nodes.append(node)

    def _split(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None:
            raise UnsupportedOpError(
                f"remove_units: removed units reach the sizes of Split {name!r}"
            )
        rank = self._rank(node.input[0])
        if int(self.index.attribute(node, "axis", 0)) % rank != state.axis:
            for output in node.output:
                self.states[output] = state
            self.nodes.append(node)
            return
        sizes = [self._size(o, state.axis) for o in node.output]
        if any(s is None for s in sizes):
            raise UnsupportedOpError(f"remove_units: Split {name!r}: output sizes unknown")
        bounds = np.cumsum([0, *sizes])
        new_sizes = []
        for output, start, stop in zip(node.output, bounds[:-1], bounds[1:], strict=True):
            part = state.kept[(state.kept >= start) & (state.kept < stop)] - start
            if len(part) == 0:
                raise UnsupportedOpError(
                    f"remove_units: output {output!r} of Split {name!r} would be empty"
                )
            self.states[output] = Layout(state.axis, part, int(stop - start))
            new_sizes.append(len(part))
        split = np.asarray(new_sizes, dtype=np.int64)
        attributes = [a for a in node.attribute if a.name not in ("split", "num_outputs")]
        del node.attribute[:]
        node.attribute.extend(attributes)
        if len(node.input) > 1 and node.input[1]:
            self._set_constant(node, 1, split)
        else:
            key = f"{node.output[0]}/split_sizes"
            self.values[key] = split
            if len(node.input) == 1:
                node.input.append(key)
            node.input[1] = key
        self.nodes.append(node)

    def _slice(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None or any(not self._is_constant(t) for t in node.input[1:] if t):
            raise UnsupportedOpError(
                f"remove_units: Slice {name!r} with removed units needs constant bounds"
            )
        rank = self._rank(node.input[0])
        starts, ends = self._value(node.input[1]), self._value(node.input[2])
        has_axes = len(node.input) > 3 and node.input[3]
        axis_values = self._value(node.input[3]) if has_axes else np.arange(len(starts))
        steps = (
            self._value(node.input[4])
            if len(node.input) > 4 and node.input[4]
            else np.ones(len(starts), np.int64)
        )
        axes = [int(a) % rank for a in axis_values]
        if state.axis not in axes:
            self.states[node.output[0]] = state
            self.nodes.append(node)
            return
        k = axes.index(state.axis)
        chosen = np.arange(state.size)[slice(int(starts[k]), int(ends[k]), int(steps[k]))]
        kept_mask = np.isin(chosen, state.kept)
        out_kept = np.flatnonzero(kept_mask)
        self.states[node.output[0]] = Layout(state.axis, out_kept, len(chosen))
        if len(out_kept) == 0:
            return
        # The slice along the units' axis becomes a Gather of the kept positions.
        physical = np.searchsorted(state.kept, chosen[kept_mask])
        gathered = self._select(node.input[0], state.axis, physical, node.output[0])
        if len(axes) == 1:
            self.nodes.append(
                helper.make_node("Identity", [gathered], list(node.output), name=node.name)
            )
            return
        others = [i for i in range(len(axes)) if i != k]
        rest = node.output[0] + "/rest"
        for slot, values in ((1, starts), (2, ends), (3, np.asarray(axes)), (4, steps)):
            key = f"{rest}/{slot}"
            self.values[key] = np.asarray(values)[others].astype(np.int64)
            while len(node.input) <= slot:
                node.input.append("")
            node.input[slot] = key
        node.input[0] = gathered
        self.nodes.append(node)

    def _gather(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None or node.input[1] not in self.index.initializers:
            raise UnsupportedOpError(
                f"remove_units: Gather {name!r} with removed units needs constant indices"
            )
        rank = self._rank(node.input[0])
        axis = int(self.index.attribute(node, "axis", 0)) % rank
        indices = self._value(node.input[1]).astype(np.int64)
        if axis != state.axis:
            shift = indices.ndim - 1 if state.axis > axis else 0
            self.states[node.output[0]] = Layout(state.axis + shift, state.kept, state.size)
            self.nodes.append(node)
            return
        if indices.ndim != 1:
            raise UnsupportedOpError(
                f"remove_units: Gather {name!r} along the units' axis needs 1-D indices"
            )
        indices = indices % state.size
        kept_mask = np.isin(indices, state.kept)
        out_kept = np.flatnonzero(kept_mask)
        self.states[node.output[0]] = Layout(axis, out_kept, len(indices))
        if len(out_kept) == 0:
            return
        self._set_constant(
            node, 1, np.searchsorted(state.kept, indices[kept_mask]).astype(np.int64)
        )
        if len(out_kept) == len(indices):
            del self.states[
                node.output[0]
            ]  # every gathered unit survives: nothing changes downstream
        self.nodes.append(node)

    def _transpose(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states[node.input[0]]
        rank = self._rank(node.input[0])
        perm = self.index.attribute(node, "perm")
        perm = list(perm) if perm is not None else list(reversed(range(rank)))
        self.states[node.output[0]] = Layout(perm.index(state.axis), state.kept, state.size)
        if not state.vanished:
            self.nodes.append(node)

    def _reshape(self, node: onnx.NodeProto, name: str) -> None:
        state = self.states.get(node.input[0])
        if state is None:
            raise UnsupportedOpError(
                f"remove_units: removed units reach the shape input of {node.op_type} {name!r}"
            )
        output = node.output[0]
        in_dims, out_dims = (
            _static(self.index.shape(node.input[0])),
            _static(self.index.shape(output)),
        )
        if in_dims is None or out_dims is None:
            raise UnsupportedOpError(
                f"remove_units: {node.op_type} {name!r} needs static shapes besides the batch"
            )
        if state.vanished:
            self.states[output] = Layout(0, state.kept, state.size)
            return
        coordinates = np.indices(in_dims, sparse=True)[state.axis]
        labels = np.broadcast_to(coordinates, in_dims).reshape(out_dims)
        varying = [
            a
            for a in range(len(out_dims))
            if labels.shape[a] > 1 and not np.all(labels == labels.take([0], axis=a))
        ]
        if len(varying) != 1:
            raise UnsupportedOpError(
                f"remove_units: {node.op_type} {name!r} spreads units over several axes; cannot remove units across it"
            )
        axis = varying[0]
        line = np.moveaxis(labels, axis, 0).reshape(out_dims[axis], -1)
        if not np.all(line == line[:, :1]):
            raise UnsupportedOpError(
                f"remove_units: {node.op_type} {name!r} mixes units; cannot remove units across it"
            )
        out_kept = np.flatnonzero(np.isin(line[:, 0], state.kept))
        self.states[output] = Layout(axis, out_kept, out_dims[axis])
        if node.op_type == "Reshape":
            shape = self._value(node.input[1]).astype(np.int64).copy()
            if shape[axis] > 0:
                shape[axis] = len(out_kept)
                self._set_constant(node, 1, shape)
        self.nodes.append(node)


def _weight_slot(node: onnx.NodeProto, layer: Layer) -> int:
    data = list(node.input).index(layer.input)
    return 1 - data


def _static(shape) -> list[int] | None:
    if shape is None:
        return None
    dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shape)]
    return dims if all(isinstance(d, int) for d in dims) else None


def _coupling_message(editor: _Editor, node, name, operands, axis) -> str:
    full = max(len(k) for k in operands.values())
    parts = []
    for slot, kept in operands.items():
        tensor = node.input[slot]
        owners = [
            la.name for la in editor.layers.values() if la.preact == tensor or la.output == tensor
        ]
        label = owners[0] if owners else tensor
        parts.append(f"{label} keeps {len(kept)}")
    return (
        f"remove_units: {node.op_type} {name!r} adds tensors that would lose different units "
        f"({', '.join(parts)} of {full}); units joined element-wise must be removed together"
    )


def _live_nodes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The nodes that contribute to a graph output, in their order."""
    needed = set(outputs)
    keep = [False] * len(nodes)
    for position in range(len(nodes) - 1, -1, -1):
        if any(o in needed for o in nodes[position].output if o):
            keep[position] = True
            needed.update(i for i in nodes[position].input if i)
    return [node for node, kept in zip(nodes, keep, strict=True) if kept]
