"""Ops that move units to other axes or repeat them: Transpose, Reshape and its kin, Expand.

A reshape is followed by reshaping a tensor of unit labels (batch set to 1): units
survive it when every label stays on one output axis. Removing units through it changes
that axis's size in a constant target shape; padding through it (zero units appended)
grows that size, and a Flatten into a Gemm pads the Gemm's columns at every spatial position.
"""

from __future__ import annotations

import numpy as np
import onnx

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.units.same_units import trace_same
from n2nonnx.graph.units.table import (
    Layout,
    Outgoing,
    Padding,
    PadEditor,
    Trace,
    UnitEditor,
    register,
    static_dims,
    unknown_trace,
)

RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _perm(index: GraphIndex, node: onnx.NodeProto, rank: int) -> list[int]:
    perm = index.attribute(node, "perm")
    return list(perm) if perm is not None else list(reversed(range(rank)))


def trace_transpose(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """The unit axis moves where the permutation puts it."""
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(node.output[0], None, None)]
    return [(node.output[0], _perm(index, node, rank).index(trace.axis), trace.unit_map)]


def remove_transpose(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """The layout follows the unit axis to its new place."""
    state = editor.states[node.input[0]]
    perm = _perm(editor.index, node, editor.rank(node.input[0]))
    editor.states[node.output[0]] = Layout(perm.index(state.axis), state.kept, state.size)
    if not state.vanished:
        editor.nodes.append(node)


def _labels(in_dims: list[int], out_dims: list[int], axis: int, along: np.ndarray) -> np.ndarray:
    """The unit label of every output element (``along``: the label of each input position)."""
    coordinates = np.indices(in_dims, sparse=True)[axis]
    labels = np.broadcast_to(along[coordinates.ravel()].reshape(coordinates.shape), in_dims)
    return labels.reshape(out_dims)


def trace_reshape(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Follow units through a reshape by reshaping a tensor of unit labels (batch set to 1)."""
    output = node.output[0]
    in_dims, out_dims = static_dims(index.shape(trace.tensor)), static_dims(index.shape(output))
    if trace.axis is None or in_dims is None or out_dims is None:
        return [(output, None, None)]
    if int(np.prod(in_dims)) != int(np.prod(out_dims)) or int(np.prod(in_dims)) > 4_000_000:
        return [(output, None, None)]
    along = trace.unit_map if trace.unit_map is not None else np.arange(in_dims[trace.axis])
    labels = _labels(in_dims, out_dims, trace.axis, along)
    # Prefer a non-batch axis of the traced axis's size (a single unit reshaped stays off axis 0).
    want = in_dims[trace.axis]
    rest = range(1, len(out_dims))
    candidates = (
        [a for a in rest if out_dims[a] == want] + [a for a in rest if out_dims[a] != want] + [0]
    )
    for axis in candidates:
        line = np.moveaxis(labels, axis, 0).reshape(out_dims[axis], -1)
        if np.all(line == line[:, :1]):
            unit_map = line[:, 0].copy() if trace.unit_map is not None else None
            if trace.unit_map is None and out_dims[axis] != in_dims[trace.axis]:
                return [(output, axis, None)]
            return [(output, axis, unit_map)]
    return [(output, None, None)]


def _reshaped_axis(in_dims, out_dims, axis: int) -> tuple[int, np.ndarray] | str:
    """The output axis that holds the units and each of its positions' unit; or a reason."""
    labels = _labels(in_dims, out_dims, axis, np.arange(in_dims[axis]))
    varying = [
        a
        for a in range(len(out_dims))
        if labels.shape[a] > 1 and not np.all(labels == labels.take([0], axis=a))
    ]
    if not varying:  # a single unit: it sits on the first later axis of its size
        size = in_dims[axis]
        varying = [next((a for a in range(1, len(out_dims)) if out_dims[a] == size), 0)]
    if len(varying) != 1:
        return "spreads units over several axes"
    line = np.moveaxis(labels, varying[0], 0).reshape(out_dims[varying[0]], -1)
    if not np.all(line == line[:, :1]):
        return "mixes units"
    return varying[0], line[:, 0]


def remove_reshape(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """The kept positions map to the output axis; a constant target shape is resized."""
    state = editor.states.get(node.input[0])
    if state is None:
        raise UnsupportedOpError(
            f"remove_units: removed units reach the shape input of {node.op_type} {name!r}"
        )
    output = node.output[0]
    in_dims = static_dims(editor.index.shape(node.input[0]))
    out_dims = static_dims(editor.index.shape(output))
    if in_dims is None or out_dims is None:
        raise UnsupportedOpError(
            f"remove_units: {node.op_type} {name!r} needs static shapes besides the batch"
        )
    found = _reshaped_axis(in_dims, out_dims, state.axis)
    if isinstance(found, str):
        raise UnsupportedOpError(
            f"remove_units: {node.op_type} {name!r} {found}; cannot remove units across it"
        )
    axis, units = found
    out_kept = np.flatnonzero(np.isin(units, state.kept))
    editor.states[output] = Layout(axis, out_kept, out_dims[axis])
    if state.vanished:
        return
    if node.op_type == "Reshape":
        shape = editor.value(node.input[1]).astype(np.int64).copy()
        if shape[axis] > 0:
            shape[axis] = len(out_kept)
            editor.set_constant(node, 1, shape)
    editor.nodes.append(node)


def pad_transpose(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """The padded axis moves where the permutation puts it."""
    state = editor.states[node.input[0]]
    perm = _perm(editor.index, node, editor.rank(node.input[0]))
    editor.states[node.output[0]] = Padding(perm.index(state.axis), state.source, state.size)
    editor.nodes.append(node)


def pad_reshape(editor: PadEditor, node: onnx.NodeProto, name: str) -> None:
    """Reshape a tensor of output positions laid out like the padded input; grow the target."""
    state = editor.states.get(node.input[0])
    if state is None:
        editor.refuse(node, "padded units reach its shape input")
        return
    output = node.output[0]
    in_dims = static_dims(editor.index.shape(node.input[0]))
    out_dims = static_dims(editor.index.shape(output))
    if in_dims is None or out_dims is None:
        editor.refuse(node, "needs static shapes besides the batch")
        return
    found = _reshaped_axis(in_dims, out_dims, state.axis)
    if isinstance(found, str):
        editor.refuse(node, found)
        return
    axis = found[0]
    grown = out_dims[axis] * len(state.source)
    if grown % state.size:
        editor.refuse(node, "would split an added unit across positions")
    new_out = list(out_dims)
    new_out[axis] = grown // state.size
    positions = np.indices(out_dims)[axis].reshape(in_dims)
    padded = Padding(state.axis, state.source, state.size).grow(positions, state.axis, -1)
    line = np.moveaxis(padded.reshape(new_out), axis, 0).reshape(new_out[axis], -1)
    if not np.all(line == line[:, :1]):
        editor.refuse(node, "mixes the added units with others")
    editor.states[output] = Padding(axis, line[:, 0].copy(), out_dims[axis])
    if node.op_type == "Reshape":
        if not editor.is_constant(node.input[1]):
            editor.refuse(node, "has a computed target shape")
        shape = editor.value(node.input[1]).astype(np.int64).copy()
        if shape[axis] == 0 and axis != state.axis:
            editor.refuse(node, "copies the size of an axis the padding changes")
        if shape[axis] > 0:
            shape[axis] = new_out[axis]
            editor.set_constant(node, 1, shape)
    editor.nodes.append(node)


def _check_reshape(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    in_dims = static_dims(index.shape(trace.tensor))
    out_dims = static_dims(index.shape(node.output[0]))
    if in_dims is None or out_dims is None or trace.axis is None:
        return f"{node.op_type} {node.name!r} has unknown shapes besides the batch"
    if node.op_type == "Reshape" and node.input[1] not in index.initializers:
        return f"Reshape {node.name!r} has a computed target shape"
    found = _reshaped_axis(in_dims, out_dims, trace.axis)
    return f"{node.op_type} {node.name!r} {found}" if isinstance(found, str) else None


register(
    "Transpose",
    trace_transpose,
    family="layout",
    remove=remove_transpose,
    scale=(0,),
    pad=pad_transpose,
)
register(
    RESHAPES,
    trace_reshape,
    family="layout",
    data_inputs=(0,),
    remove=remove_reshape,
    check=_check_reshape,
    scale=(0,),
    pad=pad_reshape,
)
register(["Expand", "Tile"], trace_same, family="layout", data_inputs=(0,), scale=(0,))


def _cumsum_mixes(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> bool:
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None or node.input[1] not in index.initializers:
        return True
    return int(index.array(node.input[1]).reshape(-1)[0]) % rank == trace.axis


register("CumSum", trace_same, family="layout", data_inputs=(0,), mixes=_cumsum_mixes)
register(["SpaceToDepth", "DepthToSpace"], unknown_trace, family="layout", scale=(0,))
