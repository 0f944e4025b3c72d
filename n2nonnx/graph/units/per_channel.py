"""Per-unit normalisations with one learned parameter per unit: BatchNorm, InstanceNorm.

Units pass; removing one slices every per-unit parameter (scale, bias, mean, variance).
The units must sit on axis 1, where these ops keep their parameters.
"""

from __future__ import annotations

import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.ops import UNIT_NORMS
from n2nonnx.graph.units.same_units import trace_same
from n2nonnx.graph.units.table import Trace, UnitEditor, register


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
)
