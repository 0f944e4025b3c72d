"""Per-unit normalisations with one learned parameter per unit: BatchNorm, InstanceNorm.

Units pass; removing one slices every per-unit parameter (scale, bias, mean, variance).
The units must sit on axis 1, where these ops keep their parameters. An added (zero)
unit gets scale 0, shift 0, mean 0 and variance 1: its output stays 0.
"""

from __future__ import annotations

import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import UNIT_NORMS
from n2nonnx.graph.units.same_units import trace_same
from n2nonnx.graph.units.table import PadEditor, Trace, UnitEditor, register


def remove_per_channel(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """Keep the surviving units' parameters."""
    state = editor.states.get(node.input[0])
    if state is None or state.axis != 1:
        raise UnsupportedOpError(
            f"remove_units: {node.op_type} {name!r} must normalise along the units' axis"
        )
    editor.states[node.output[0]] = state
    if state.vanished:
        return
    for slot in range(1, len(node.input)):
        if node.input[slot]:
            editor.set_constant(node, slot, editor.value(node.input[slot])[state.kept])
    editor.nodes.append(node)


def pad_per_channel(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """Give the added units parameters that keep them at 0 (variance 1, the rest 0)."""
    state = editor.states.get(node.input[0])
    if state is None or state.axis != 1:
        editor.refuse(node, "does not normalise along the padded axis")
        return
    for slot in range(1, len(node.input)):
        if not node.input[slot]:
            continue
        if not editor.is_constant(node.input[slot]):
            editor.refuse(node, "has computed parameters")
        fill = 1.0 if node.op_type == "BatchNormalization" and slot == 4 else 0.0
        editor.set_constant(node, slot, state.grow(editor.value(node.input[slot]), 0, fill))
    editor.states[node.output[0]] = state
    editor.nodes.append(node)


def _check(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    if trace.axis != 1:
        return f"{node.op_type} {node.name!r} normalises another axis than the units'"
    return None


register(
    UNIT_NORMS,
    trace_same,
    family="per_channel",
    data_inputs=(0,),
    remove=remove_per_channel,
    check=_check,
    pad=pad_per_channel,
)
