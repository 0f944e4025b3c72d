"""Ops that join tensors: element-wise arithmetic with broadcasting, and Concat.

Arithmetic joins are a residual Add, a gate Mul, an N2NSkip Add.

Element-wise operands must keep the same units: a removal that breaks this is refused,
naming the layers that have to go together; an operand that loses every unit drops out of
a sum (a product of it vanishes). Concat gives each input its own segment of the unit axis.
Padding (zero units appended) follows the same law: element-wise operands must be padded
alike, constant operands grow with a neutral fill (0; 1 for a divisor or an exponent).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.units.table import (
    ALL,
    PRODUCT,
    Layout,
    Outgoing,
    Padding,
    PadEditor,
    Scale,
    Trace,
    UnitEditor,
    register,
    size_along,
)

ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"})


def trace_broadcast(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Units stay; the axis shifts with the output's rank (numpy broadcasting)."""
    output = node.output[0]
    in_rank, out_rank = index.rank(trace.tensor), index.rank(output)
    if trace.axis is None or in_rank is None or out_rank is None:
        return [(output, None, None)]
    axis = trace.axis + out_rank - in_rank
    unit_map = trace.unit_map
    if unit_map is not None and size_along(index, output, axis) not in (None, len(unit_map)):
        unit_map = None  # a single unit broadcast over many
    return [(output, axis, unit_map)]


def trace_concat(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Along the concat axis the input's units take its segment; elsewhere they pass."""
    output = node.output[0]
    rank = index.rank(output)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    axis = int(index.attribute(node, "axis")) % rank
    if axis != trace.axis or trace.unit_map is None:
        return [(output, trace.axis, trace.unit_map if axis != trace.axis else None)]
    pieces = []
    for name in node.input:
        if name == trace.tensor:
            pieces.append(trace.unit_map)
            continue
        size = size_along(index, name, axis)
        if size is None:
            return [(output, axis, None)]
        pieces.append(np.full(size, -1))
    return [(output, axis, np.concatenate(pieces))]


def remove_arithmetic(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """Every operand that varies along the units' axis must keep the same units."""
    out_rank = editor.rank(node.output[0])
    axis, size, vanished = _joined_axis(editor, node, name, out_rank)
    operands = _operands(editor, node, out_rank, axis, size, vanished)
    if vanished:
        remaining = _without_vanished(editor, node, name, vanished, axis, size)
        if remaining is None:
            return
        node = remaining
    if len({tuple(k.tolist()) for k in operands.values()}) > 1:
        raise InvalidArgumentError(_coupling_message(editor, node, name, operands))
    kept = next(iter(operands.values())) if operands else np.zeros(0, np.int64)
    state = Layout(axis, kept, size)
    for slot, tensor in enumerate(node.input):
        if tensor and editor.is_constant(tensor):
            editor.slice_broadcast(node, slot, out_rank, state)
    editor.states[node.output[0]] = state
    editor.nodes.append(node)


def _joined_axis(
    editor: UnitEditor, node: onnx.NodeProto, name: str, out_rank: int
) -> tuple[int, int, list[int]]:
    """The units' axis in the output, their original count, and the operands that lose all.

    Raises:
        UnsupportedOpError: operands carry removed units along different axes.
    """
    axis: int | None = None
    size = 0
    vanished: list[int] = []
    for slot, tensor in enumerate(node.input):
        state = editor.states.get(tensor)
        if state is None:
            continue
        aligned = state.axis + out_rank - editor.rank(tensor)
        if axis not in (None, aligned):
            raise UnsupportedOpError(
                f"remove_units: {node.op_type} {name!r} joins units on different axes"
            )
        axis, size = aligned, state.size
        if state.vanished:
            vanished.append(slot)
    if axis is None:  # the pass calls a rule only for nodes that removed units reach
        raise UnsupportedOpError(f"remove_units: no removed units reach {node.op_type} {name!r}")
    return axis, size, vanished


def _operands(
    editor: UnitEditor, node: onnx.NodeProto, out_rank: int, axis: int, size: int, vanished
) -> dict[int, np.ndarray]:
    """Slot -> the original positions along the units' axis of each non-constant operand.

    Operands broadcast along the units' axis (size 1 there, or of lower rank) have none;
    constants and vanished operands are left out.
    """
    operands: dict[int, np.ndarray] = {}
    for slot, tensor in enumerate(node.input):
        if not tensor or editor.is_constant(tensor) or slot in vanished:
            continue
        state = editor.states.get(tensor)
        if state is not None:
            operands[slot] = state.kept
            continue
        dim = axis - (out_rank - editor.rank(tensor))
        if dim >= 0 and editor.size(tensor, dim) != 1:
            operands[slot] = np.arange(size)
    return operands


def _without_vanished(
    editor: UnitEditor, node: onnx.NodeProto, name: str, vanished: list[int], axis: int, size: int
) -> onnx.NodeProto | None:
    """Drop the operands that lose every unit from a sum; a product of one vanishes.

    Returns:
        The node to keep (an Identity where one operand remains), or ``None`` where the
        output vanishes too (its layout is recorded).

    Raises:
        UnsupportedOpError: an op other than Add, Sum or Mul loses an operand entirely.
    """
    if node.op_type == "Mul":
        editor.states[node.output[0]] = Layout(axis, np.zeros(0, np.int64), size)
        return None
    if node.op_type not in ("Add", "Sum"):
        raise UnsupportedOpError(
            f"remove_units: every unit of an operand of {node.op_type} {name!r} would go"
        )
    remaining = [node.input[s] for s in range(len(node.input)) if s not in vanished]
    if not remaining:
        editor.states[node.output[0]] = Layout(axis, np.zeros(0, np.int64), size)
        return None
    if len(remaining) == 1:
        return helper.make_node("Identity", remaining, list(node.output), name=node.name)
    del node.input[:]
    node.input.extend(remaining)
    return node


def _coupling_message(editor: UnitEditor, node, name, operands) -> str:
    full = max(len(k) for k in operands.values())
    parts = []
    for slot, kept in operands.items():
        tensor = node.input[slot]
        owners = [la.name for la in editor.layers.values() if tensor in (la.preact, la.output)]
        parts.append(f"{owners[0] if owners else tensor} keeps {len(kept)}")
    return (
        f"remove_units: {node.op_type} {name!r} adds tensors that would lose different units "
        f"({', '.join(parts)} of {full}); units joined element-wise must be removed together"
    )


def remove_concat(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """Along the concat axis each input keeps its surviving segment; elsewhere they must agree."""
    rank = editor.rank(node.output[0])
    concat_axis = int(editor.index.attribute(node, "axis")) % rank
    states = [editor.states.get(t) for t in node.input]
    axis = next(s.axis for s in states if s is not None)
    if concat_axis != axis:
        agreed = {tuple(s.kept.tolist()) for s in states if s is not None}
        if len(agreed) != 1 or any(s is None for s in states):
            raise InvalidArgumentError(
                f"remove_units: {node.op_type} {name!r} joins tensors that lose different units"
            )
        editor.states[node.output[0]] = next(s for s in states if s is not None)
        editor.nodes.append(node)
        return
    pieces, offset, inputs = [], 0, []
    for tensor, state in zip(node.input, states, strict=True):
        size = state.size if state is not None else editor.size(tensor, axis)
        if size is None:
            raise UnsupportedOpError(f"remove_units: Concat {name!r}: size of {tensor!r} unknown")
        kept = state.kept if state is not None else np.arange(size)
        if len(kept):
            inputs.append(tensor)
            pieces.append(kept + offset)
        offset += size
    kept = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    editor.states[node.output[0]] = Layout(axis, kept, offset)
    if inputs:
        del node.input[:]
        node.input.extend(inputs)
        editor.nodes.append(node)


def pad_arithmetic(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """Every operand that varies along the padded axis must be padded alike."""
    out_rank = editor.rank(node.output[0])
    padded: dict[int, Padding] = {}
    for slot, tensor in enumerate(node.input):
        state = editor.states.get(tensor)
        if state is not None:
            padded[slot] = Padding(
                state.axis + out_rank - editor.rank(tensor), state.source, state.size
            )
    first = next(iter(padded.values()))
    if any(
        p.axis != first.axis or not np.array_equal(p.source, first.source) for p in padded.values()
    ):
        editor.refuse(node, "joins tensors padded differently; pad the layers together")
    fill = 1.0 if node.op_type in ("Div", "Pow") else 0.0
    for slot, tensor in enumerate(node.input):
        if not tensor or slot in padded:
            continue
        rank = editor.rank(tensor)
        dim = first.axis - (out_rank - rank)
        shape = editor.index.shape(tensor)
        size = shape[dim] if shape is not None and 0 <= dim < rank else 1
        if dim < 0 or size == 1:
            continue  # broadcast along the padded axis
        if not editor.is_constant(tensor):
            editor.refuse(node, f"joins the padded units with {tensor!r}, which is not padded")
        value = editor.value(tensor)
        if value.shape[dim] != first.size:
            editor.refuse(node, f"cannot tell how {tensor!r} lines up with the padded units")
        editor.set_constant(node, slot, first.grow(value, dim, fill))
    editor.states[node.output[0]] = first
    editor.nodes.append(node)


def pad_concat(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """Along the padded axis each input keeps its segment, added units included."""
    rank = editor.rank(node.output[0])
    concat_axis = int(editor.index.attribute(node, "axis")) % rank
    states = [editor.states.get(t) for t in node.input]
    first = next(s for s in states if s is not None)
    if concat_axis != first.axis:
        agreed = {tuple(s.source.tolist()) for s in states if s is not None}
        if len(agreed) != 1 or any(s is None for s in states):
            editor.refuse(node, "joins tensors padded differently along another axis")
        editor.states[node.output[0]] = first
        editor.nodes.append(node)
        return
    pieces, offset = [], 0
    for tensor, state in zip(node.input, states, strict=True):
        shape = editor.index.shape(tensor)
        size = state.size if state is not None else (shape[concat_axis] if shape else None)
        if not isinstance(size, int):
            editor.refuse(node, f"the size of {tensor!r} is unknown")
            return
        source = state.source if state is not None else np.arange(size)
        pieces.append(np.where(source < 0, -1, source + offset))
        offset += size
    editor.states[node.output[0]] = Padding(concat_axis, np.concatenate(pieces), offset)
    editor.nodes.append(node)


def _check_concat(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    rank = index.rank(node.output[0])
    if rank is None or trace.axis is None:
        return f"Concat {node.name!r}: the rank is unknown"
    along = int(index.attribute(node, "axis")) % rank == trace.axis
    if along and any(size_along(index, t, trace.axis) is None for t in node.input):
        return f"Concat {node.name!r}: an input's size is unknown"
    return None


_SCALE: dict[str, Scale] = {
    **dict.fromkeys(["Add", "Sub", "Sum", "Max", "Min", "Mean"], ALL),
    "Mul": PRODUCT,
    "Div": PRODUCT,
    "PRelu": (0,),
}
register(
    ARITHMETIC,
    trace_broadcast,
    family="joins",
    remove=remove_arithmetic,
    scale=_SCALE,
    pad=pad_arithmetic,
)
register("Where", trace_broadcast, family="joins", data_inputs=(1, 2), scale=(1, 2))
register(["And", "Or"], trace_broadcast, family="joins")
register(
    "Concat",
    trace_concat,
    family="joins",
    remove=remove_concat,
    check=_check_concat,
    scale=ALL,
    pad=pad_concat,
)
