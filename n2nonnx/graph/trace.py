"""Unit tracing: which units of which layer feed which input units of the next layers.

From every origin (a graph input, or a layer's pre-activation) a trace walks forward
through the non-layer ops until it reaches layers or graph outputs. It carries the axis
that holds the units and a *unit map* (for each position along that axis, the origin
unit found there, -1 for none). What each op does is its rule in
:mod:`n2nonnx.graph.units`; an op without a rule keeps the wiring but loses the map
(``None``). The same walk asks each rule whether the origin's units could be removed
through the op, so every layer also learns why its units cannot be removed, if they cannot.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx

from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.records import Edge, Layer
from n2nonnx.graph.units import Trace, rule_for, unknown_trace
from n2nonnx.graph.units.joins import trace_broadcast
from n2nonnx.graph.units.same_units import trace_same
from n2nonnx.graph.units.table import size_along


def trace_edges(index: GraphIndex, layers: list[Layer]) -> tuple[list[Edge], dict[str, str]]:
    """All edges from graph inputs and layers to the layers / graph outputs they reach.

    Args:
        index: the graph.
        layers: its layers, without edges.

    Returns:
        The edges, and layer name -> why its units cannot be removed (layers whose units
        can are absent).
    """
    names = {layer.name: layer for layer in layers}
    layer_at: dict[int, Layer] = {
        position: names[name] for position, name in enumerate(index.node_names) if name in names
    }
    edges: list[Edge] = []
    for name in [*index.graph_inputs, *embedding_outputs(index)]:
        # token ids carry no units: an embedding table's rows do
        found, _ = _walk(
            index, f"input:{name}", name, _input_feature_axis(index, name, layers), layer_at
        )
        edges += found
    blockers: dict[str, str] = {}
    for layer in layers:
        found, blocker = _walk(index, layer.name, layer.preact, layer.out_feature_axis, layer_at)
        edges += found
        if blocker is not None:
            blockers[layer.name] = blocker
    return edges, blockers


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
    return size_along(index, name, _input_feature_axis(index, name, layers))


def _input_feature_axis(index: GraphIndex, name: str, layers: list[Layer]) -> int | None:
    view = input_view(index, name, layers)
    if view is not None:
        return view[2]
    rank = index.rank(name)
    if rank is None:
        return None
    convolutional = any(layer.op in ("Conv", "ConvTranspose") for layer in layers)
    return 1 if convolutional and rank >= 3 else rank - 1


def _keeps_axes(op: str) -> bool:
    """Ops between a graph input and its first layer that keep every axis (or permute them).

    An exporter's Transpose of a channels-last image, a Cast, a normalising Sub / Div,
    an activation: the unit rules that keep units in place and mix nothing.
    """
    rule = rule_for(op)
    return (
        rule is not None
        and rule.mixes is False
        and (rule.trace in (trace_same, trace_broadcast) or op == "Transpose")
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
            if not _keeps_axes(node.op_type) or not output or output in seen:
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


def _walk(index, origin, tensor, axis, layer_at) -> tuple[list[Edge], str | None]:
    """The edges from one origin to the layers and outputs its units reach, and its blocker."""
    found, blocker = follow(index, tensor, axis, layer_at)
    edges: list[Edge] = []
    for name, trace in found.items():
        if name in index.graph_outputs:
            edges.append(Edge(origin, f"output:{name}", trace.via, trace.unit_map, trace.mixed))
        for position in index.consumers.get(name, []):
            layer = layer_at.get(position)
            if layer is not None and layer.input == name:
                edges.append(Edge(origin, layer.name, trace.via, _fit(trace, layer), trace.mixed))
    return edges, blocker


def follow(
    index: GraphIndex, tensor: str, axis: int | None, layer_at: dict[int, Layer] | None = None
) -> tuple[dict[str, Trace], str | None]:
    """Follow the units of ``tensor`` (on ``axis``) through the graph, up to the layers.

    Each tensor reached holds one :class:`~n2nonnx.graph.units.Trace`. A tensor reached
    again is merged: a mixed arrival (through a reduction over the unit axis, say,
    broadcast back by a Sub) marks it mixed, an arrival with a known axis fills an unknown
    one, and the change travels on.

    Args:
        index: the graph.
        tensor: where the units start (a layer's pre-activation, a graph input).
        axis: their axis there.
        layer_at: node position -> layer, for the layers where the walk stops.

    Returns:
        Tensor name -> its trace, and why the units cannot be removed (None: they can).
    """
    layer_at = layer_at or {}
    size = size_along(index, tensor, axis)
    start = Trace(tensor, axis, np.arange(size) if size is not None else None, ())
    found: dict[str, Trace] = {tensor: start}
    queue = deque([start])
    blocker: str | None = None
    while queue:
        trace = queue.popleft()
        if found[trace.tensor] is not trace:
            continue  # superseded by a merge
        for position in index.consumers.get(trace.tensor, []):
            node = index.nodes[position]
            if position in layer_at:  # traces stop at layers (a weight slot is not an input)
                continue
            rule = rule_for(node.op_type)
            if rule is None:
                reason: str | None = f"{node.op_type} {node.name!r} has no unit rule"
                outgoing, mixes = unknown_trace(index, node, trace), True
            else:
                reason = rule.removal_blocker(index, node, trace)
                if rule.trace is None or not rule.carries(node, trace.tensor):
                    outgoing, mixes = [], False
                else:
                    outgoing = rule.trace(index, node, trace)
                    mixes = rule.mixes_units(index, node, trace)
            if blocker is None and reason is not None:
                blocker = reason
            for output, out_axis, out_map in outgoing:
                if not output:
                    continue
                arrived = Trace(
                    output, out_axis, out_map, (*trace.via, node.op_type), trace.mixed or mixes
                )
                merged = _merge(found.get(output), arrived)
                if merged is not None:
                    found[output] = merged
                    queue.append(merged)
    return found, blocker


def _merge(old: Trace | None, new: Trace) -> Trace | None:
    """The tensor's trace after ``new`` arrives (None: nothing changed).

    Two maps along one axis combine where one of them has no unit (a Concat of two of the
    origin's tensors); a position that two paths give different units mixes them.
    """
    if old is None:
        return new
    mixed = old.mixed or new.mixed
    if old.axis is None and new.axis is not None:
        return Trace(old.tensor, new.axis, new.unit_map, new.via, mixed)
    mine, theirs = old.unit_map, new.unit_map
    if (
        old.axis == new.axis
        and mine is not None
        and theirs is not None
        and len(mine) == len(theirs)
    ):
        mixed = mixed or bool(((mine >= 0) & (theirs >= 0) & (mine != theirs)).any())
        combined = np.where(mine >= 0, mine, theirs)
        if mixed != old.mixed or not np.array_equal(combined, mine):
            return Trace(old.tensor, old.axis, combined, old.via, mixed)
        return None
    return Trace(old.tensor, old.axis, mine, old.via, mixed) if mixed != old.mixed else None


def _fit(trace: Trace, layer: Layer) -> np.ndarray | None:
    if trace.unit_map is None or trace.axis != layer.in_feature_axis:
        return None
    if len(trace.unit_map) != layer.in_units:
        return None
    return trace.unit_map
