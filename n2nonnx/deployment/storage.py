"""Compact storage of sparse weights that stock onnxruntime loads at full speed.

A sparse initializer ``W`` is replaced by its non-zero values and the gaps between their
flat indices as uint8, and a constant subgraph that rebuilds it::

    gaps (uint8) -> Cast(int64) -> CumSum -> Unsqueeze -> ScatterND(zeros, ., values) -> Reshape -> W

Every input of that subgraph is a constant, so onnxruntime folds it at session creation
(graph optimisation level ``basic`` or higher): inference runs on the dense ``W`` with no
per-call cost. :func:`unfolded_expansions` checks this on the optimised model
onnxruntime writes. A gap above 255 is bridged by extra zero entries every 255
positions. ``fp16=True`` stores the values in half precision (Cast back to the weight's
type inside the subgraph). Tensors for which this would not save at least a quarter stay
dense.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

MAX_GAP = 255
MIN_ELEMENTS = 256
SAVING = 0.75  # compact only where it stores at most this fraction of the dense bytes
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
_AXIS = "n2nonnx.deploy/cumsum_axis"
_LAST = "n2nonnx.deploy/unsqueeze_last"


@dataclass(frozen=True)
class CompactTensor:
    """One tensor stored compactly.

    Attributes:
        name: the initializer's name.
        elements: its element count.
        entries: stored entries (non-zeros plus gap bridges).
        dense_bytes: bytes of the dense tensor.
        compact_bytes: bytes of the compact form (gaps plus values).
    """

    name: str
    elements: int
    entries: int
    dense_bytes: int
    compact_bytes: int


def encode_gaps(flat_indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between ascending flat indices as uint8, with zero entries bridging gaps above 255.

    Args:
        flat_indices: ascending positions of the non-zeros.
        values: their values.

    Returns:
        ``(gaps, values)``: ``cumsum(gaps)`` gives the positions (bridges included), and the
        bridge entries hold 0.
    """
    gaps = np.diff(np.concatenate([[0], flat_indices.astype(np.int64)]))
    steps = np.maximum(1, -(-gaps // MAX_GAP))
    ends = np.cumsum(steps) - 1
    out_gaps = np.full(int(steps.sum()), MAX_GAP, dtype=np.int64)
    out_gaps[ends] = gaps - MAX_GAP * (steps - 1)
    out_values = np.zeros(len(out_gaps), dtype=values.dtype)
    out_values[ends] = values
    return out_gaps.astype(np.uint8), out_values


def compact_storage(
    proto: onnx.ModelProto, *, fp16: bool = False
) -> tuple[onnx.ModelProto, list[CompactTensor]]:
    """Store the sparse floating-point initializers of ``proto`` compactly.

    Args:
        proto: the model (not modified).
        fp16: store the non-zero values in half precision (float32 weights only).

    Returns:
        The new model and one record per compacted tensor.
    """
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    graph = result.graph
    overridable = {value.name for value in graph.input}
    kept: list[onnx.TensorProto] = []
    added: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    records: list[CompactTensor] = []
    for tensor in graph.initializer:
        record = None
        if tensor.data_type in FLOAT_TYPES and tensor.name not in overridable:
            record = _compact(tensor, nodes, added, fp16)
        if record is None:
            kept.append(tensor)
        else:
            records.append(record)
    if not records:
        return result, []
    added += [
        numpy_helper.from_array(np.array(0, dtype=np.int64), _AXIS),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), _LAST),
    ]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return result, records


def _compact(
    tensor: onnx.TensorProto, nodes: list, added: list, fp16: bool
) -> CompactTensor | None:
    """Append the expansion of ``tensor`` to ``nodes`` / ``added``; None where it would not pay."""
    array = numpy_helper.to_array(tensor)
    if array.size < MIN_ELEMENTS:
        return None
    flat = array.reshape(-1)
    indices = np.flatnonzero(flat)
    value_type = np.float16 if fp16 and array.dtype == np.float32 else array.dtype
    dense_bytes = array.nbytes
    gaps, values = encode_gaps(indices, flat[indices].astype(value_type))
    compact_bytes = gaps.nbytes + values.nbytes
    if compact_bytes > SAVING * dense_bytes:
        return None
    name = tensor.name
    shape = numpy_helper.from_array(np.asarray(array.shape, dtype=np.int64), f"{name}/shape")
    size = numpy_helper.from_array(np.asarray([array.size], dtype=np.int64), f"{name}/size")
    zero = numpy_helper.from_array(np.zeros(1, dtype=array.dtype))
    added.extend([shape, size])
    dense_flat = f"{name}/dense_flat"
    if len(indices) == 0:
        nodes.append(
            helper.make_node(
                "ConstantOfShape", [size.name], [dense_flat], name=f"{name}/zeros", value=zero
            )
        )
    else:
        added.extend(
            [
                numpy_helper.from_array(gaps, f"{name}/gaps"),
                numpy_helper.from_array(values, f"{name}/values"),
            ]
        )
        zeros = f"{name}/zeros"
        nodes += [
            helper.make_node(
                "ConstantOfShape", [size.name], [zeros], name=f"{name}/zeros", value=zero
            ),
            helper.make_node(
                "Cast",
                [f"{name}/gaps"],
                [f"{name}/gaps64"],
                name=f"{name}/gaps_to_int64",
                to=TensorProto.INT64,
            ),
            helper.make_node(
                "CumSum", [f"{name}/gaps64", _AXIS], [f"{name}/positions"], name=f"{name}/positions"
            ),
            helper.make_node(
                "Unsqueeze",
                [f"{name}/positions", _LAST],
                [f"{name}/indices"],
                name=f"{name}/indices",
            ),
        ]
        updates = f"{name}/values"
        if value_type != array.dtype:
            updates = f"{name}/values_cast"
            nodes.append(
                helper.make_node(
                    "Cast",
                    [f"{name}/values"],
                    [updates],
                    name=f"{name}/values_cast",
                    to=tensor.data_type,
                )
            )
        nodes.append(
            helper.make_node(
                "ScatterND",
                [zeros, f"{name}/indices", updates],
                [dense_flat],
                name=f"{name}/scatter",
            )
        )
    nodes.append(
        helper.make_node("Reshape", [dense_flat, shape.name], [name], name=f"{name}/expand")
    )
    return CompactTensor(name, int(array.size), len(gaps), dense_bytes, compact_bytes)


def unfolded_expansions(proto: onnx.ModelProto, records: list[CompactTensor]) -> list[str]:
    """Expansion nodes that onnxruntime did not fold at session creation (should be none).

    Opens a session at optimisation level ``basic`` that writes its optimised model, and
    looks for the expansion subgraphs' nodes in it.

    Args:
        proto: a model made by :func:`compact_storage`.
        records: what it compacted.

    Returns:
        Names of the compacted tensors still computed at inference.
    """
    if not records:
        return []
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="n2nonnx-fold-") as folder:
        path = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(
            proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        optimized = onnx.load(str(path), load_external_data=False)
    produced = {output for node in optimized.graph.node for output in node.output}
    return [record.name for record in records if record.name in produced]
