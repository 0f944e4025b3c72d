"""Reductions and normalisations over axes: ReduceMean and kin, LayerNorm, GroupNorm, Softmax.

Over another axis than the units' they pass units on (a mean over tokens). Over the unit
axis they *couple* units: every output position depends on every unit (a LayerNorm's
mean and variance, a softmax's sum), so the edge is mixed and no unit can be removed
through them: removing one, even a constant one, would change the statistics; nor can a
unit be added (padded) through them.
"""

from __future__ import annotations

import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import REDUCTIONS
from n2nonnx.graph.units.same_units import remove_same, trace_same
from n2nonnx.graph.units.table import (
    Layout,
    Outgoing,
    Padding,
    PadEditor,
    Trace,
    UnitEditor,
    register,
)

AXIS_NORMS = frozenset(
    {
        "LayerNormalization",
        "GroupNormalization",
        "Softmax",
        "LogSoftmax",
        "Hardmax",
        "LpNormalization",
    }
)


def normalised_axes(index: GraphIndex, node: onnx.NodeProto, rank: int) -> set[int]:
    """The axes a normalisation or reduction computes its statistics over."""
    op = node.op_type
    if op in REDUCTIONS:
        axes = index.attribute(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1] in index.initializers:
            axes = index.array(node.input[1]).tolist()
        return set(range(rank)) if axes is None else {int(a) % rank for a in axes}
    if op == "GroupNormalization":
        return set(range(1, rank))
    if op == "LayerNormalization":
        return set(range(int(index.attribute(node, "axis", -1)) % rank, rank))
    # Softmax and kin (opset 13 on: normalisation raises older models) and LpNormalization.
    return {int(index.attribute(node, "axis", -1)) % rank}


def _mixes(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> bool:
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return True
    return trace.axis in normalised_axes(index, node, rank)


def trace_reduce(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Units survive a reduction over other axes (the axis shifts without keepdims)."""
    output = node.output[0]
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    axes = normalised_axes(index, node, rank)
    if trace.axis in axes:
        return [(output, None, None)]
    keepdims = int(index.attribute(node, "keepdims", 1))
    axis = trace.axis if keepdims else trace.axis - sum(a < trace.axis for a in axes)
    return [(output, axis, trace.unit_map)]


def remove_reduce(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """A reduction over other axes keeps the units (the axis shifts without keepdims)."""
    state = editor.states.get(node.input[0])
    rank = editor.rank(node.input[0])
    axes = normalised_axes(editor.index, node, rank)
    if state is None or state.axis in axes:
        raise UnsupportedOpError(f"remove_units: {node.op_type} {name!r} reduces the units' axis")
    keepdims = int(editor.index.attribute(node, "keepdims", 1))
    axis = state.axis if keepdims else state.axis - sum(a < state.axis for a in axes)
    editor.states[node.output[0]] = Layout(axis, state.kept, state.size)
    if not state.vanished:
        editor.nodes.append(node)


def remove_norm(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """A normalisation over other axes keeps the units where they are."""
    state = editor.states.get(node.input[0])
    if state is None or state.axis in normalised_axes(
        editor.index, node, editor.rank(node.input[0])
    ):
        raise UnsupportedOpError(
            f"remove_units: {node.op_type} {name!r} normalises over the units' axis"
        )
    remove_same(editor, node, name)


def pad_reduce(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """A reduction or normalisation over other axes keeps the added units (the axis may shift)."""
    state = editor.states.get(node.input[0])
    axes = normalised_axes(editor.index, node, editor.rank(node.input[0]))
    if state is None or state.axis in axes:
        editor.refuse(node, "computes over the padded axis")
        return
    axis = state.axis
    if node.op_type in REDUCTIONS and not int(editor.index.attribute(node, "keepdims", 1)):
        axis -= sum(a < state.axis for a in axes)
    editor.states[node.output[0]] = Padding(axis, state.source, state.size)
    editor.nodes.append(node)


register(
    REDUCTIONS,
    trace_reduce,
    family="normalizations",
    data_inputs=(0,),
    mixes=_mixes,
    remove=remove_reduce,
    pad=pad_reduce,
    scale={op: (0,) for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin")},
)
register(
    AXIS_NORMS,
    trace_same,
    family="normalizations",
    data_inputs=(0,),
    mixes=_mixes,
    remove=remove_norm,
    pad=pad_reduce,
)
