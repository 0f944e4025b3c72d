"""Normalisation: make every weight an initializer, upgrade old opsets, infer shapes.

The normalised graph is what every later stage reads: constant subgraphs (Constant
nodes, Identity/Cast/Transpose/Reshape ... of constants) are folded into initializers by
onnx-graphsurgeon, nodes are topologically sorted, opsets older than
:data:`ANALYSIS_OPSET` are upgraded with onnx's version converter (so Split, Squeeze,
Clip, Slice and Dropout take inputs rather than attributes), and shapes are inferred.
n2nonnx's mask nodes (recognised by their tags) are protected from folding, and every tag
survives the tools used here (graphsurgeon and the version converter drop ``metadata_props``).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence

import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference, version_converter
from onnx_graphsurgeon.logger import G_LOGGER

from n2nonnx import tags
from n2nonnx.errors import InvalidModelError, ShapeError, UnsupportedOpError
from n2nonnx.graph.batch_shapes import complete_batch_shapes
from n2nonnx.graph.scatter_check import check_constant_scatters

MIN_OPSET = 7
ANALYSIS_OPSET = 13
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")

log = logging.getLogger(__name__)


def default_opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset version of ``proto``."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise InvalidModelError("model imports no default-domain ('ai.onnx') opset; re-export it")


def normalize(
    proto: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    upgrade: bool = True,
    copy_input: bool = True,
) -> onnx.ModelProto:
    """Return a normalised copy of ``proto`` (the input is not modified).

    Args:
        proto: a model that passed ``onnx.checker``.
        input_shapes: graph input name -> full shape; fixes symbolic dims (a symbolic
            batch dimension stays symbolic).
        upgrade: upgrade opsets below :data:`ANALYSIS_OPSET` (falls back to the original
            opset with a warning if onnx's converter cannot).
        copy_input: work on a copy; ``False`` lets a caller that owns ``proto`` (just
            read it from a file) save the copy of a large model.

    Returns:
        The normalised model.
    """
    opset = default_opset(proto)
    if opset < MIN_OPSET:
        raise UnsupportedOpError(
            f"model uses opset {opset}; n2nonnx supports opset {MIN_OPSET} and newer: "
            "re-export the model with a newer opset"
        )
    model = copy.deepcopy(proto) if copy_input else proto
    from n2nonnx.metadata import METADATA_KEY

    tags.upgrade_legacy(model, METADATA_KEY)
    saved_tags = tags.snapshot(model.graph)
    if upgrade and opset < ANALYSIS_OPSET:
        model = _upgrade(model, opset)
    check_constant_scatters(model)  # damaged compact storage: one line, not the folder's logs
    model = _fold_constants(model)
    tags.restore(model.graph, saved_tags)
    _name_unknown_input_dims(model)
    exported = [] if input_shapes else _drop_inferable_value_info(model)
    if input_shapes:
        _set_input_shapes(model, input_shapes)
    model = infer_shapes(model)
    inferred = {value.name for value in model.graph.value_info}
    model.graph.value_info.extend(
        v for v in exported if v.name not in inferred
    )  # where inference stops
    return model


def _name_unknown_input_dims(model: onnx.ModelProto) -> None:
    """Input dims stored as -1 or 0 (PaddlePaddle) or left empty are unknown: make them symbolic.

    Dimension 0 becomes ``batch`` (so inference carries one batch symbol through the graph
    instead of inventing ``unk__N`` names); the others ``<input>_dim<i>``.
    """
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and dim.dim_param:
                continue
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            dim.dim_param = "batch" if position == 0 else f"{value.name}_dim{position}"


def _drop_inferable_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Drop the exporter's shapes of tensors that standard ops produce.

    Inference recomputes them, and a stale one (jax2onnx writes channels-last shapes for
    channels-first tensors) would contradict it and make the saved model fail onnx's full
    check. Shapes after custom-domain ops are kept (inference cannot recompute those).

    Args:
        model: the model, edited in place.

    Returns:
        The dropped entries, for the tensors inference leaves without a shape.
    """
    standard = {
        out
        for node in model.graph.node
        if node.domain in ("", "ai.onnx", "ai.onnx.ml")
        for out in node.output
    }
    dropped = [copy.deepcopy(v) for v in model.graph.value_info if v.name in standard]
    if dropped:
        kept = [value for value in model.graph.value_info if value.name not in standard]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
    return dropped


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation, run on a copy without large weights.

    Inference needs only the types and dims of big initializers, so their bytes are left
    out of the copy handed to onnx: this is fast, and works for models over 2 GB. Shapes
    it misses because they depend on the batch's value (a reshape target computed from
    ``Shape``) are completed by inference at a concrete batch
    (:func:`~n2nonnx.graph.batch_shapes.complete_batch_shapes`).
    """
    light = onnx.ModelProto()
    light.CopyFrom(model) if initializer_bytes(
        model
    ) < _LIGHT_COPY_BYTES else _copy_without_large_data(model, light)
    del light.graph.value_info[:]
    light.graph.value_info.extend(model.graph.value_info)
    try:
        inferred = shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, ValueError) as error:
        raise InvalidModelError(f"shape inference failed: {_first_line(error)}") from None
    complete_batch_shapes(light, inferred)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


_LIGHT_COPY_BYTES = 64 * 2**20
_LARGE_TENSOR_BYTES = 2**20


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's values, from its dims and type (touching the data would copy it)."""
    itemsize = (
        onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor.data_type else 1
    )
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count * itemsize


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializer values of ``model``."""
    return sum(tensor_nbytes(t) for t in model.graph.initializer)


def _copy_without_large_data(model: onnx.ModelProto, light: onnx.ModelProto) -> None:
    """Fill ``light`` with ``model`` minus the raw bytes of large initializers."""
    graph = model.graph
    light.CopyFrom(onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import))
    light.graph.CopyFrom(
        onnx.GraphProto(
            name=graph.name,
            node=graph.node,
            input=graph.input,
            output=graph.output,
            value_info=graph.value_info,
        )
    )
    for tensor in graph.initializer:
        if tensor_nbytes(tensor) > _LARGE_TENSOR_BYTES:
            light.graph.initializer.add(
                name=tensor.name, data_type=tensor.data_type, dims=tensor.dims
            )
        else:
            light.graph.initializer.append(tensor)


# What the opset converter and the checker raise: their own errors, and the C++ exceptions that
# pybind11 translates (runtime_error and unknown ones -> RuntimeError, invalid_argument ->
# ValueError, out_of_range -> IndexError, overflow_error -> OverflowError, bad_cast -> TypeError).
_UPGRADE_ERRORS = (
    version_converter.ConvertError,
    onnx.checker.ValidationError,
    shape_inference.InferenceError,
    RuntimeError,
    ValueError,
    IndexError,
    OverflowError,
    TypeError,
)


def _upgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    try:
        upgraded = version_converter.convert_version(model, ANALYSIS_OPSET)
        onnx.checker.check_model(upgraded)
    except _UPGRADE_ERRORS as error:
        warnings.warn(
            f"could not upgrade opset {opset} to {ANALYSIS_OPSET} ({_first_line(error)}); "
            "keeping the original opset",
            stacklevel=3,
        )
        return model
    upgraded.ir_version = max(
        model.ir_version, onnx.helper.find_min_ir_version_for(upgraded.opset_import)
    )
    return upgraded


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant subgraphs into initializers, keeping n2nonnx mask nodes intact."""
    if not _has_constant_subgraph(model):
        return model  # nothing to fold: skip the copy through graphsurgeon (large models)
    mask_nodes = [n for n in model.graph.node if _is_protected(n)]
    ir_version = model.ir_version
    opsets = list(model.opset_import)
    mask_inputs = {name for n in mask_nodes for name in n.input}
    mask_initializers = [copy.deepcopy(i) for i in model.graph.initializer if i.name in mask_inputs]
    if mask_nodes:
        # Hide the mask Muls from the folder: their outputs become temporary graph inputs.
        keep = [n for n in model.graph.node if not _is_protected(n)]
        del model.graph.node[:]
        model.graph.node.extend(keep)
        for node in mask_nodes:
            model.graph.input.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
    severity, G_LOGGER.severity = G_LOGGER.severity, G_LOGGER.CRITICAL
    try:
        graph = gs.import_onnx(model)
        graph.fold_constants(error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
        folded = gs.export_onnx(graph, do_type_check=False)
    finally:
        G_LOGGER.severity = severity
    folded.ir_version = ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(opsets)
    if mask_nodes:
        hidden = {n.output[0] for n in mask_nodes}
        inputs = [i for i in folded.graph.input if i.name not in hidden]
        del folded.graph.input[:]
        folded.graph.input.extend(inputs)
        nodes = list(folded.graph.node)
        del folded.graph.node[:]
        folded.graph.node.extend(mask_nodes + nodes)  # mask inputs are initializers: valid order
        present = {i.name for i in folded.graph.initializer}
        folded.graph.initializer.extend(i for i in mask_initializers if i.name not in present)
    for prop in model.metadata_props:
        if not any(p.key == prop.key for p in folded.metadata_props):
            folded.metadata_props.add(key=prop.key, value=prop.value)
    return folded


def _has_constant_subgraph(model: onnx.ModelProto) -> bool:
    """Whether any node (besides n2nonnx's mask nodes) computes from constants only."""
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            return True
        inputs = [name for name in node.input if name]
        if _is_protected(node):
            continue
        if inputs and all(name in constant for name in inputs):
            return True
    return False


def _is_protected(node: onnx.NodeProto) -> bool:
    """n2nonnx's mask nodes: folding them would bake the mask into the weight."""
    return tags.role(node) in tags.PROTECTED_NODE_ROLES


def _set_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    inputs = {i.name: i for i in model.graph.input}
    for name, shape in input_shapes.items():
        if name not in inputs:
            raise ShapeError(
                f"--input-shape names {name!r}, but the model's inputs are {sorted(inputs)}"
            )
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ShapeError(
                f"input {name!r} has rank {len(dims)} but the given shape {tuple(shape)} has "
                f"rank {len(shape)}; give every dimension, e.g. 1x3x32x32"
            )
        for position, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if position == 0 and dim.HasField("dim_param"):
                continue  # the batch dimension stays symbolic
            # -1 / 0 (PaddlePaddle) and symbolic dims are unknown: they take the given size
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != int(size):
                raise ShapeError(
                    f"input {name!r} dimension {position} is {dim.dim_value} in the model, "
                    f"but {size} was given"
                )
            dim.dim_value = int(size)
    # Stale intermediate shapes would contradict the new input shapes.
    del model.graph.value_info[:]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
