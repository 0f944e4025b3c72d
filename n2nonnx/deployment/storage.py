"""Compact storage of sparse weights that stock onnxruntime loads at full speed.

A sparse initializer ``W`` is replaced by its non-zero values and the gaps between their
flat indices as uint8, and a constant subgraph that rebuilds it::

    gaps (uint8) -> Cast(int64) -> CumSum -> Unsqueeze -> ScatterND(zeros, ., values) -> Reshape -> W

Every input of that subgraph is a constant, so onnxruntime folds it at session creation
(graph optimisation level ``basic`` or higher): inference runs on the dense ``W`` with no
per-call cost. :func:`unfolded_expansions` checks this on the optimised model
onnxruntime writes. A gap above 255 is bridged by extra zero entries every 255
positions. ``fp16=True`` stores the values in half precision (Cast back to the weight's
type inside the subgraph). int8 weights (of a quantized model, read by
``DequantizeLinear``) are compacted the same way: onnxruntime folds the expansion before
it fuses the integer kernels. Tensors for which this would not save at least a quarter stay
dense; a sparse weight (at least half zeros, at least 256 elements) left dense is named
with the reason, and so are 4-bit packed weights.

Initializers also listed as graph inputs (IR version 3, e.g. Caffe2-era exports, where
every initializer had to be an input) are defaults a caller could override; a deployed
model's weights are fixed (pruned, units removed), so :func:`initializers_out_of_inputs`
takes them out of ``graph.input`` first, raising the IR version from 3 to 4 (the version
that dropped that rule, and changed nothing else). The expansion needs opset 11 (CumSum,
ScatterND); an older model is upgraded with ``onnx.version_converter`` where it converts.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

MAX_GAP = 255
MIN_ELEMENTS = 256
SAVING = 0.75  # compact only where it stores at most this fraction of the dense bytes
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
COMPACT_TYPES = (*FLOAT_TYPES, TensorProto.INT8)
SPARSE = 0.5  # a tensor with at least this fraction of zeros left dense is reported
MIN_OPSET = 11  # CumSum, ScatterND
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


@dataclass(frozen=True)
class InputsMoved:
    """What :func:`initializers_out_of_inputs` did.

    Attributes:
        moved: initializers taken out of ``graph.input``.
        ir_before / ir_after: the model's IR version before and after.
        kept: initializers left in ``graph.input``, with the reason (empty when none).
    """

    moved: list[str]
    ir_before: int
    ir_after: int
    kept: dict[str, str]

    def to_dict(self) -> dict:
        """Plain JSON-ready values (for the summary)."""
        return asdict(self)


def initializers_out_of_inputs(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, InputsMoved]:
    """Take initializers out of ``graph.input``, raising IR version 3 to 4 where that is needed.

    An input with an initializer is a default value; in a deployed model the weights are
    fixed, so they stop being inputs. IR 3 required every initializer to be an input; IR 4
    dropped that rule and changed nothing else, so 3 -> 4 is safe. Older IR versions (no
    opset imports) are left alone.

    Args:
        proto: the model (not modified).

    Returns:
        The new model (``proto`` itself where nothing moved) and what moved.
    """
    initializers = {t.name for t in proto.graph.initializer}
    listed = [value.name for value in proto.graph.input if value.name in initializers]
    if not listed:
        return proto, InputsMoved([], proto.ir_version, proto.ir_version, {})
    if proto.ir_version < 3:
        reason = f"a graph input of an IR-{proto.ir_version} model (IR < 3 is not upgraded)"
        return proto, InputsMoved(
            [], proto.ir_version, proto.ir_version, dict.fromkeys(listed, reason)
        )
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    kept_inputs = [value for value in result.graph.input if value.name not in initializers]
    del result.graph.input[:]
    result.graph.input.extend(kept_inputs)
    result.ir_version = max(result.ir_version, 4)
    log.info(
        "deploy: %d initializers taken out of graph.input (IR %d -> %d)",
        len(listed),
        proto.ir_version,
        result.ir_version,
    )
    return result, InputsMoved(listed, proto.ir_version, result.ir_version, {})


def compact_storage(
    proto: onnx.ModelProto, *, fp16: bool = False, skipped: dict[str, str] | None = None
) -> tuple[onnx.ModelProto, list[CompactTensor]]:
    """Store the sparse floating-point and int8 initializers of ``proto`` compactly.

    Args:
        proto: the model (not modified).
        fp16: store the non-zero values in half precision (float32 weights only).
        skipped: filled with the sparse weights (at least half zeros, at least 256
            elements) and 4-bit packed weights left dense, and why.

    Returns:
        The new model and one record per compacted tensor. A model below opset 11 is
        first upgraded to opset 11 (where onnx.version_converter converts it).
    """
    skipped = {} if skipped is None else skipped
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    opset = _default_opset(result)
    if opset < MIN_OPSET:
        upgraded = _upgrade(result)
        if upgraded is None:
            for tensor in proto.graph.initializer:
                if _sparse(tensor):
                    skipped[tensor.name] = (
                        f"the model's opset {opset} lacks CumSum / ScatterND (opset 11) and "
                        "onnx.version_converter could not upgrade it"
                    )
            return result, []
        result, opset = upgraded, MIN_OPSET
    graph = result.graph
    overridable = {value.name for value in graph.input}
    packed = {
        node.input[1]: "4-bit packed weights (MatMulNBits) are stored as they are"
        for node in graph.node
        if node.op_type == "MatMulNBits"
    }
    kept: list[onnx.TensorProto] = []
    added: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    records: list[CompactTensor] = []
    for tensor in graph.initializer:
        record, reason = None, None
        if tensor.data_type not in COMPACT_TYPES:
            reason = f"type {TensorProto.DataType.Name(tensor.data_type).lower()} is not compacted"
        elif tensor.data_location == TensorProto.EXTERNAL:
            reason = "stored as external data"
        elif tensor.name in overridable:
            reason = "a graph input (a default the caller can override at run time)"
        else:
            record, reason = _compact(tensor, nodes, added, fp16, opset)
        if record is None:
            kept.append(tensor)
            if reason is not None and _reported(tensor, packed):
                skipped[tensor.name] = packed.get(tensor.name, reason)
        else:
            records.append(record)
    if skipped:
        log.debug("deploy: sparse tensors left dense: %s", skipped)
    if not records:
        return proto, []
    added += [
        numpy_helper.from_array(np.array(0, dtype=np.int64), _AXIS),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), _LAST),
    ]
    if opset < 13:
        added.pop()  # Unsqueeze takes its axes as an attribute before opset 13
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return result, records


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 0)


def _upgrade(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """``proto`` converted to opset 11 by onnx.version_converter, or None where it fails."""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as error:  # noqa: BLE001 - the converter raises many kinds
        log.info("deploy: opset upgrade to %d failed: %s", MIN_OPSET, error)
        return None
    log.info("deploy: opset %d -> %d for the compact storage", _default_opset(proto), MIN_OPSET)
    return upgraded


def _reported(tensor: onnx.TensorProto, packed: dict[str, str]) -> bool:
    """A weight worth naming when left dense: sparse, big enough, not a zero point."""
    if tensor.name in packed:
        return True
    size = int(np.prod(tensor.dims)) if tensor.dims else 1
    return size >= MIN_ELEMENTS and not tensor.name.endswith("zero_point") and _sparse(tensor)


def _sparse(tensor: onnx.TensorProto) -> bool:
    """At least :data:`SPARSE` of the elements are zero (external or non-numeric: no)."""
    if tensor.data_location == TensorProto.EXTERNAL or tensor.data_type == TensorProto.STRING:
        return False
    array = numpy_helper.to_array(tensor)
    return bool(array.size > 0 and np.count_nonzero(array) <= (1 - SPARSE) * array.size)


def _compact(
    tensor: onnx.TensorProto, nodes: list, added: list, fp16: bool, opset: int
) -> tuple[CompactTensor | None, str | None]:
    """Append the expansion of ``tensor`` to ``nodes`` / ``added``; (None, why) where it would not pay."""
    array = numpy_helper.to_array(tensor)
    if array.size < MIN_ELEMENTS:
        return None, f"{array.size} elements, below the {MIN_ELEMENTS} worth compacting"
    flat = array.reshape(-1)
    indices = np.flatnonzero(flat)
    value_type = np.float16 if fp16 and array.dtype == np.float32 else array.dtype
    dense_bytes = array.nbytes
    gaps, values = encode_gaps(indices, flat[indices].astype(value_type))
    compact_bytes = gaps.nbytes + values.nbytes
    if compact_bytes > SAVING * dense_bytes:
        return None, (
            f"the compact form would take {compact_bytes / max(dense_bytes, 1):.0%} of the "
            f"dense bytes (compacted at {SAVING:.0%} or less)"
        )
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
            )
            if opset >= 13
            else helper.make_node(
                "Unsqueeze",
                [f"{name}/positions"],
                [f"{name}/indices"],
                name=f"{name}/indices",
                axes=[-1],
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
    return CompactTensor(name, int(array.size), len(gaps), dense_bytes, compact_bytes), None


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
