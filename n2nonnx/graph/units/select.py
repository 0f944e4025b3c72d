"""Ops that pick positions: Gather, Slice and Split (with constant indices, bounds, sizes).

Along the unit axis they carry the picked units (an N2NSkip branch starts with a Gather);
removing a unit drops it from the picks, renumbering the rest.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from n2nonnx.errors import UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.units.table import (
    Layout,
    Outgoing,
    Trace,
    UnitEditor,
    register,
    size_along,
    unknown_trace,
)


def trace_split(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Along the split axis each output takes its segment of the units."""
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(o, None, None) for o in node.output]
    axis = int(index.attribute(node, "axis", 0)) % rank
    if axis != trace.axis:
        return [(o, trace.axis, trace.unit_map) for o in node.output]
    sizes = [size_along(index, o, axis) for o in node.output]
    if trace.unit_map is None or any(s is None for s in sizes):
        return [(o, axis, None) for o in node.output]
    bounds = np.cumsum([0, *sizes])
    return [
        (o, axis, trace.unit_map[a:b])
        for o, a, b in zip(node.output, bounds[:-1], bounds[1:], strict=True)
    ]


def remove_split(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """Each output keeps its surviving part; the split sizes shrink."""
    state = editor.states.get(node.input[0])
    if state is None:
        raise UnsupportedOpError(f"remove_units: removed units reach the sizes of Split {name!r}")
    rank = editor.rank(node.input[0])
    if int(editor.index.attribute(node, "axis", 0)) % rank != state.axis:
        for output in node.output:
            editor.states[output] = state
        editor.nodes.append(node)
        return
    sizes = [editor.size(o, state.axis) for o in node.output]
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
        editor.states[output] = Layout(state.axis, part, int(stop - start))
        new_sizes.append(len(part))
    split = np.asarray(new_sizes, dtype=np.int64)
    attributes = [a for a in node.attribute if a.name not in ("split", "num_outputs")]
    del node.attribute[:]
    node.attribute.extend(attributes)
    if len(node.input) > 1 and node.input[1]:
        editor.set_constant(node, 1, split)
    else:
        key = f"{node.output[0]}/split_sizes"
        editor.values[key] = split
        if len(node.input) == 1:
            node.input.append(key)
        node.input[1] = key
    editor.nodes.append(node)


def _slice_bounds(index: GraphIndex, node: onnx.NodeProto, rank: int):
    """(starts, ends, axes, steps) of a Slice; None where an input is not constant."""
    if len(node.input) == 1:  # opset < 10: attributes
        starts, ends = index.attribute(node, "starts"), index.attribute(node, "ends")
        axes, steps = index.attribute(node, "axes"), None
    else:
        constant = [index.array(n) if n in index.initializers else None for n in node.input[1:]]
        if any(c is None for c in constant):
            return None
        starts, ends = constant[0], constant[1]
        axes = constant[2] if len(constant) > 2 else None
        steps = constant[3] if len(constant) > 3 else None
    axis_list = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    step_list = [1] * len(axis_list) if steps is None else [int(s) for s in steps]
    return starts, ends, axis_list, step_list


def trace_slice(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Along the unit axis the slice picks units; elsewhere they pass."""
    output = node.output[0]
    rank = index.rank(trace.tensor)
    if trace.axis is None or rank is None:
        return [(output, None, None)]
    bounds = _slice_bounds(index, node, rank)
    if bounds is None:
        return [(output, trace.axis, None)]
    starts, ends, axes, steps = bounds
    if trace.axis not in axes:
        return [(output, trace.axis, trace.unit_map)]
    if trace.unit_map is None:
        return [(output, trace.axis, None)]
    k = axes.index(trace.axis)
    chosen = np.arange(len(trace.unit_map))[slice(int(starts[k]), int(ends[k]), steps[k])]
    return [(output, trace.axis, trace.unit_map[chosen])]


def remove_slice(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """A slice along the units' axis becomes a Gather of the kept positions."""
    state = editor.states.get(node.input[0])
    if state is None or any(not editor.is_constant(t) for t in node.input[1:] if t):
        raise UnsupportedOpError(
            f"remove_units: Slice {name!r} with removed units needs constant bounds"
        )
    rank = editor.rank(node.input[0])
    starts, ends = editor.value(node.input[1]), editor.value(node.input[2])
    has_axes = len(node.input) > 3 and node.input[3]
    axis_values = editor.value(node.input[3]) if has_axes else np.arange(len(starts))
    steps = (
        editor.value(node.input[4])
        if len(node.input) > 4 and node.input[4]
        else np.ones(len(starts), np.int64)
    )
    axes = [int(a) % rank for a in axis_values]
    if state.axis not in axes:
        editor.states[node.output[0]] = state
        editor.nodes.append(node)
        return
    k = axes.index(state.axis)
    chosen = np.arange(state.size)[slice(int(starts[k]), int(ends[k]), int(steps[k]))]
    kept_mask = np.isin(chosen, state.kept)
    out_kept = np.flatnonzero(kept_mask)
    editor.states[node.output[0]] = Layout(state.axis, out_kept, len(chosen))
    if len(out_kept) == 0:
        return
    physical = np.searchsorted(state.kept, chosen[kept_mask])
    gathered = editor.select(node.input[0], state.axis, physical, node.output[0])
    if len(axes) == 1:
        editor.nodes.append(
            helper.make_node("Identity", [gathered], list(node.output), name=node.name)
        )
        return
    others = [i for i in range(len(axes)) if i != k]
    rest = node.output[0] + "/rest"
    for slot, values in ((1, starts), (2, ends), (3, np.asarray(axes)), (4, steps)):
        key = f"{rest}/{slot}"
        editor.values[key] = np.asarray(values)[others].astype(np.int64)
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = key
    node.input[0] = gathered
    editor.nodes.append(node)


def _check_slice(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    if len(node.input) == 1 or any(t and t not in index.initializers for t in node.input[1:]):
        return f"Slice {node.name!r} has no constant bounds"
    return None


def trace_gather(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Along the unit axis constant 1-D indices pick units; elsewhere they pass."""
    output = node.output[0]
    rank = index.rank(trace.tensor)
    indices_name = node.input[1]
    if trace.axis is None or rank is None or indices_name not in index.initializers:
        return [(output, None, None)]
    axis = int(index.attribute(node, "axis", 0)) % rank
    indices = index.array(indices_name)
    if axis != trace.axis:
        shift = indices.ndim - 1 if trace.axis > axis else 0
        return [(output, trace.axis + shift, trace.unit_map)]
    if indices.ndim != 1:
        return [(output, None, None)]
    unit_map = None if trace.unit_map is None else trace.unit_map[indices.astype(np.int64)]
    return [(output, axis, unit_map)]


def remove_gather(editor: UnitEditor, node: onnx.NodeProto, name: str) -> None:
    """Entries of removed units are dropped from the indices, the rest renumbered."""
    state = editor.states.get(node.input[0])
    if state is None or node.input[1] not in editor.index.initializers:
        raise UnsupportedOpError(
            f"remove_units: Gather {name!r} with removed units needs constant indices"
        )
    rank = editor.rank(node.input[0])
    axis = int(editor.index.attribute(node, "axis", 0)) % rank
    indices = editor.value(node.input[1]).astype(np.int64)
    if axis != state.axis:
        shift = indices.ndim - 1 if state.axis > axis else 0
        editor.states[node.output[0]] = Layout(state.axis + shift, state.kept, state.size)
        editor.nodes.append(node)
        return
    if indices.ndim != 1:
        raise UnsupportedOpError(
            f"remove_units: Gather {name!r} along the units' axis needs 1-D indices"
        )
    indices = indices % state.size
    kept_mask = np.isin(indices, state.kept)
    out_kept = np.flatnonzero(kept_mask)
    editor.states[node.output[0]] = Layout(axis, out_kept, len(indices))
    if len(out_kept) == 0:
        return
    editor.set_constant(node, 1, np.searchsorted(state.kept, indices[kept_mask]).astype(np.int64))
    if len(out_kept) == len(indices):
        del editor.states[node.output[0]]  # every gathered unit survives: nothing changes
    editor.nodes.append(node)


def _check_gather(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
    if node.input[1] not in index.initializers:
        return f"Gather {node.name!r} has computed indices"
    rank = index.rank(trace.tensor)
    if rank is None or trace.axis is None:
        return f"Gather {node.name!r}: the rank is unknown"
    axis = int(index.attribute(node, "axis", 0)) % rank
    if axis == trace.axis and index.array(node.input[1]).ndim != 1:
        return f"Gather {node.name!r} picks units with indices that are not 1-D"
    return None


register("Split", trace_split, family="select", data_inputs=(0,), remove=remove_split, scale=(0,))
register(
    "Slice",
    trace_slice,
    family="select",
    data_inputs=(0,),
    remove=remove_slice,
    check=_check_slice,
    scale=(0,),
)
register(
    "Gather",
    trace_gather,
    family="select",
    data_inputs=(0,),
    remove=remove_gather,
    check=_check_gather,
    scale=(0,),
)
register("GatherElements", unknown_trace, family="select", data_inputs=(0,), scale=(0,))
