"""Ops that keep every unit where it is: activations, elementwise math, pooling and resampling.

Values or spatial sizes change, units do not. A unit is removed through them by dropping
it from their input (nothing to rewrite), except where a ``Pad`` pads the unit axis.
A zero unit appended (padding) passes the same way; where ``f(0) != 0`` (Sigmoid) the added
unit is a constant the consumers' zero columns ignore, so only ops that are not finite
at 0 (``Log``, ``Reciprocal``) refuse it: ``inf * 0`` is not 0.
"""

from __future__ import annotations

import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import ACTIVATIONS, ELEMENTWISE_MATH, SPATIAL
from n2nonnx.graph.units.table import (
    Outgoing,
    PadEditor,
    Trace,
    UnitEditor,
    register,
    size_along,
)

#: Ops whose value at 0 is not finite: an added zero unit would reach consumers as inf / NaN.
NOT_FINITE_AT_ZERO = frozenset({"Log", "Reciprocal"})


def trace_same(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """The unit axis and map pass unchanged (the map is dropped if the axis changes size)."""
    output = node.output[0]
    if (
        trace.axis is not None
        and trace.unit_map is not None
        and size_along(index, output, trace.axis) not in (None, len(trace.unit_map))
    ):
        return [(output, trace.axis, None)]
    return [(output, trace.axis, trace.unit_map)]


def remove_same(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """The output holds the input's positions; a vanished input makes the node go."""
    state = editor.states.get(node.input[0])
    if state is None:
        raise UnsupportedOpError(
            f"remove_units: removed units reach a parameter input of {node.op_type} {name!r}"
        )
    reason = _pads_unit_axis(editor.index, node, state.axis)
    if reason:
        raise UnsupportedOpError(f"remove_units: {reason}")
    editor.states[node.output[0]] = state
    if not state.vanished:
        editor.nodes.append(node)


def pad_same(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """The output holds the input's positions, added units included."""
    state = editor.states.get(node.input[0])
    if state is None:
        editor.refuse(node, "padded units reach a parameter input")
        return
    if node.op_type in NOT_FINITE_AT_ZERO:
        editor.refuse(node, "is not finite at 0, the value of the added units")
    reason = _pads_unit_axis(editor.index, node, state.axis)
    if reason:
        editor.refuse(node, reason)
    editor.states[node.output[0]] = state
    editor.nodes.append(node)


def _check_pad(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    return _pads_unit_axis(index, node, trace.axis)


def _pads_unit_axis(index: GraphIndex, node: onnx.NodeProto, axis: int | None) -> str | None:
    if node.op_type != "Pad" or axis is None or len(node.input) < 2:
        return None
    if node.input[1] not in index.initializers:
        return f"Pad {node.name!r} has computed pads"
    pads = index.array(node.input[1])
    rank = len(pads) // 2
    if axis < rank and (pads[axis] or pads[axis + rank]):
        return f"Pad {node.name!r} pads the units' axis"
    return None


_HOMOGENEOUS = {
    "Relu", "LeakyRelu", "Abs", "Neg", "Identity", "Dropout", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "Resize",
}  # fmt: skip

register(
    ACTIVATIONS | ELEMENTWISE_MATH | (SPATIAL - {"Pad"}),
    trace_same,
    family="same_units",
    data_inputs=(0,),
    remove=remove_same,
    scale={op: (0,) for op in _HOMOGENEOUS},
    pad=pad_same,
)
register(
    "Pad",
    trace_same,
    family="same_units",
    data_inputs=(0,),
    remove=remove_same,
    check=_check_pad,
    scale=(0, 2),
    pad=pad_same,
)
