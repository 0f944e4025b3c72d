"""Ops that keep every unit where it is: activations, elementwise math, pooling and resampling.

Values or spatial sizes change, units do not. A unit is removed through them by dropping
it from their input (nothing to rewrite), except where a ``Pad`` pads the unit axis.
"""

from __future__ import annotations

import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import ACTIVATIONS, ELEMENTWISE_MATH, SPATIAL
from n2nonnx.graph.units.table import Outgoing, Trace, UnitEditor, register, size_along


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
)
register(
    "Pad",
    trace_same,
    family="same_units",
    data_inputs=(0,),
    remove=remove_same,
    check=_check_pad,
    scale=(0, 2),
)
