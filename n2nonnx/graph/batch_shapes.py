"""The graph's batch dimension: shapes inference misses on a symbolic batch, and a fixed batch.

Exporters compute reshape targets from the data: PaddlePaddle's ``flatten`` is
``Reshape(x, Concat(Slice(Shape(x), 0, 1), [-1]))``. On a symbolic batch ONNX's inference
cannot size the ``-1`` (and ``Reshape`` before opset 14 ignores propagated shape data
altogether), so every tensor after it has no shape and the layers there cannot be analysed.

:func:`complete_batch_shapes` infers the graph again with each batch symbol replaced by a
concrete sentinel size: ``Shape``/``Size`` of fully known tensors and the small integer
subgraphs that read them (Slice, Concat, Gather, arithmetic ...) are evaluated with
:mod:`onnx.reference` and handed to inference as constants, for a few rounds. This runs twice,
with two different sentinels: a dim equal in both runs is a fixed size, a dim equal to the
sentinel in both runs is the batch symbol again, anything else (``2 * batch``) stays unknown.
Only tensors that symbolic inference left without a shape, or with an unknown size that is
not an input's symbol, are filled in; other unknown input dims (an image width of -1) stay
symbolic, so such models still ask for ``--input-shape``.

:func:`fixed_batch` reads the batch size an exporter baked into the graph (the dynamo
exporter, ``dynamic_batch=False``): reshape targets then hold products of it (tokens x
batch, batch x heads) that no rule can make symbolic again, so the backend and
onnxruntime helpers run such a graph in chunks of exactly that batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

log = logging.getLogger(__name__)

SENTINELS = ((7919, 7907), (7901, 7883), (7879, 7877), (7873, 7867))
"""Concrete sizes (primes, unlikely as real sizes) per batch symbol, for the two runs."""

MAX_ROUNDS = 8
"""Fold-and-infer rounds per run (a chain of data-dependent reshapes needs one each)."""

FOLD_ELEMENTS = 64
"""Largest tensor folded into a constant: shape vectors, never activations."""

_STANDARD = ("", "ai.onnx")
_RANDOM_OPS = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
}

Shape = tuple[int | str | None, ...]


def batch_symbols(graph: onnx.GraphProto) -> list[str]:
    """The graph inputs' symbolic batch names: dim 0 where symbolic, else an input's only symbol.

    Args:
        graph: the graph (its inputs' shapes are read).

    Returns:
        The distinct names, in input order.
    """
    initializers = {t.name for t in graph.initializer}
    found: list[str] = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = _dims(value) or ()
        symbolic = [d for d in dims if isinstance(d, str)]
        symbol = dims[0] if dims and isinstance(dims[0], str) else None
        if symbol is None and len(symbolic) == 1:
            symbol = symbolic[0]
        if symbol is not None and symbol not in found:
            found.append(symbol)
    return found


def fixed_batch(graph: onnx.GraphProto) -> int | None:
    """The batch size baked into the graph: dim 0 of every input, where all are the same size.

    Args:
        graph: the graph (its inputs' shapes are read).

    Returns:
        That size, or None when an input has no shape, a rank of 0, or a dim 0 that is
        symbolic, unknown or different from another input's.
    """
    initializers = {t.name for t in graph.initializer}
    sizes = set()
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = _dims(value)
        if not dims or not isinstance(dims[0], int) or dims[0] <= 0:
            return None
        sizes.add(dims[0])
    return sizes.pop() if len(sizes) == 1 else None


def complete_batch_shapes(light: onnx.ModelProto, inferred: onnx.ModelProto) -> int:
    """Fill in the shapes symbolic inference missed because they depend on the batch's value.

    Args:
        light: the model handed to inference (large weights may lack their bytes); not changed.
        inferred: its inferred copy, whose ``value_info`` and outputs are completed in place.

    Returns:
        The number of tensors whose shape was completed (0 when nothing was missing).
    """
    symbols = batch_symbols(light.graph)[: len(SENTINELS)]
    known_symbols = _input_symbols(light.graph)
    missing = _incomplete(inferred, known_symbols)
    if not symbols or not missing:
        return 0
    runs = []
    for which in range(2):
        sizes = {symbol: SENTINELS[i][which] for i, symbol in enumerate(symbols)}
        shapes = _concrete_run(light, sizes)
        if shapes is None:
            return 0
        runs.append(shapes)
    sentinels = {(a, b): symbol for symbol, (a, b) in zip(symbols, SENTINELS, strict=False)}
    completed = 0
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        if value.name in missing:
            completed += _restore(
                value, runs[0].get(value.name), runs[1].get(value.name), sentinels, known_symbols
            )
    new = [name for name in missing if name in runs[0] and name not in _named(inferred)]
    for name in new:
        value = onnx.ValueInfoProto(name=name)
        value.type.tensor_type.elem_type = runs[0][name][0]
        if _restore(value, runs[0][name], runs[1][name], sentinels, known_symbols):
            inferred.graph.value_info.append(value)
            completed += 1
    if completed:
        log.debug("completed %d shapes by inference at a concrete batch", completed)
    return completed


def _dims(value: onnx.ValueInfoProto) -> Shape | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
        for d in tensor_type.shape.dim
    )


def _input_symbols(graph: onnx.GraphProto) -> set[str]:
    return {d for value in graph.input for d in (_dims(value) or ()) if isinstance(d, str)}


def _named(model: onnx.ModelProto) -> set[str]:
    return {v.name for v in [*model.graph.value_info, *model.graph.output]}


def _incomplete(model: onnx.ModelProto, symbols: set[str]) -> set[str]:
    """Outputs of standard nodes with no shape, or a size that is neither known nor an input symbol."""
    values = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    found = set()
    for node in model.graph.node:
        if node.domain not in _STANDARD:
            continue
        for name in node.output:
            if not name:
                continue
            value = values.get(name)
            dims = None if value is None else _dims(value)
            if value is not None and value.type.WhichOneof("value") not in (None, "tensor_type"):
                continue  # sequences, maps, optionals: not shaped here
            if dims is None or any(
                d is None or (isinstance(d, str) and d not in symbols) for d in dims
            ):
                found.add(name)
    return found


def _concrete_run(
    light: onnx.ModelProto, sizes: dict[str, int]
) -> dict[str, tuple[int, Shape]] | None:
    """Element type and shape of every tensor, with the batch symbols set to ``sizes``."""
    model = onnx.ModelProto()
    model.CopyFrom(light)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    opsets = {entry.domain or "": int(entry.version) for entry in model.opset_import}
    folded: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, Shape]] = {}
    for _ in range(MAX_ROUNDS):
        try:
            result = shape_inference.infer_shapes(
                model, check_type=False, strict_mode=False, data_prop=True
            )
        except (shape_inference.InferenceError, ValueError, RuntimeError):
            return None
        for value in [*result.graph.value_info, *result.graph.output]:
            dims = _dims(value)
            if dims is not None:
                shapes[value.name] = (value.type.tensor_type.elem_type, dims)
        new = _fold(model, shapes, folded, opsets)
        if not new:
            break
        _replace_with_constants(model, new)
        folded.update(new)
    for name, array in folded.items():
        shapes[name] = (onnx.helper.np_dtype_to_tensor_dtype(array.dtype), tuple(array.shape))
    return shapes


def _fold(
    model: onnx.ModelProto,
    shapes: dict[str, tuple[int, Shape]],
    folded: dict[str, np.ndarray],
    opsets: dict[str, int],
) -> dict[str, np.ndarray]:
    """Values of Shape/Size of fully known tensors and of small nodes computed from them."""
    constants = {t.name: t for t in model.graph.initializer}
    known: dict[str, np.ndarray] = {}
    new: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        if name in known:
            return known[name]
        tensor = constants.get(name)
        if tensor is None or _elements(tensor.dims) > FOLD_ELEMENTS or _external(tensor):
            return None
        known[name] = numpy_helper.to_array(tensor)
        return known[name]

    for node in model.graph.node:
        if node.domain not in _STANDARD or node.op_type in _RANDOM_OPS or not node.output:
            continue
        outputs = _evaluate_shape_op(node, shapes)
        if outputs is None:
            inputs = [value(name) if name else None for name in node.input]
            from_data = any(name in known and name not in constants for name in node.input)
            if not from_data or any(
                a is None for a, n in zip(inputs, node.input, strict=True) if n
            ):
                continue
            outputs = _evaluate(node, inputs, opsets)
        if outputs is None or any(_elements(a.shape) > FOLD_ELEMENTS for a in outputs):
            continue
        for name, array in zip(node.output, outputs, strict=False):
            if name:
                known[name] = array
                new[name] = array
    return new


def _evaluate_shape_op(
    node: onnx.NodeProto, shapes: dict[str, tuple[int, Shape]]
) -> list[np.ndarray] | None:
    """``Shape`` and ``Size`` of a tensor whose dims are all known."""
    if node.op_type not in ("Shape", "Size") or not node.input:
        return None
    entry = shapes.get(node.input[0])
    if entry is None or not all(isinstance(d, int) for d in entry[1]):
        return None
    dims = [int(d) for d in entry[1]]  # type: ignore[arg-type]
    if node.op_type == "Size":
        return [np.array(int(np.prod(dims)), dtype=np.int64)]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    start, end = attributes.get("start", 0), attributes.get("end")
    return [np.array(dims[start:end], dtype=np.int64)]


def _evaluate(
    node: onnx.NodeProto, inputs: list[np.ndarray | None], opsets: dict[str, int]
) -> list[np.ndarray] | None:
    """Run one node with onnx's reference implementation (None where it cannot)."""
    from onnx.reference import ReferenceEvaluator

    names = [name for name in node.input if name]
    graph = onnx.helper.make_graph(
        [node],
        "fold",
        [onnx.helper.make_empty_tensor_value_info(name) for name in names],
        [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name],
    )
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
    )
    feeds = {name: array for name, array in zip(node.input, inputs, strict=True) if name}
    try:
        results = ReferenceEvaluator(proto).run(None, feeds)
    except Exception:  # noqa: BLE001 - any failure only means this node stays unfolded
        return None
    return [np.asarray(r) for r in results]


def _replace_with_constants(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """Drop the nodes that produce ``values`` and add those values as initializers."""
    keep = [n for n in model.graph.node if not any(name in values for name in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in values.items())
    present = set(values)
    infos = [v for v in model.graph.value_info if v.name not in present]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)


def _restore(
    value: onnx.ValueInfoProto,
    first: tuple[int, Shape] | None,
    second: tuple[int, Shape] | None,
    sentinels: dict[tuple[int, int], str],
    known: set[str],
) -> int:
    """Set ``value``'s shape from the two concrete runs; 1 if it became more complete, else 0."""
    if first is None or second is None or len(first[1]) != len(second[1]):
        return 0
    before = _dims(value)
    if before is not None and len(before) != len(first[1]):
        return 0
    dims: list[int | str | None] = []
    for position, (a, b) in enumerate(zip(first[1], second[1], strict=True)):
        old = before[position] if before is not None else None
        if isinstance(old, int) or old in known:
            dims.append(old)
        elif isinstance(a, int) and a == b and (a, b) not in sentinels:
            dims.append(a)
        elif isinstance(a, int) and isinstance(b, int) and (a, b) in sentinels:
            dims.append(sentinels[(a, b)])
        elif isinstance(a, str) and a == b:
            dims.append(a)
        else:
            dims.append(old)
    if before is not None and _unknowns(dims, known) >= _unknowns(before, known):
        return 0
    value.type.tensor_type.ClearField("shape")
    shape = value.type.tensor_type.shape
    for dim in dims:
        entry = shape.dim.add()
        if isinstance(dim, int):
            entry.dim_value = dim
        elif isinstance(dim, str):
            entry.dim_param = dim
    if not value.type.tensor_type.elem_type:
        value.type.tensor_type.elem_type = first[0]
    return 1


def _unknowns(dims: Iterable[int | str | None], known: set[str]) -> int:
    return sum(1 for d in dims if d is None or (isinstance(d, str) and d not in known))


def _elements(dims: Iterable[int]) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def _external(tensor: onnx.TensorProto) -> bool:
    """An initializer whose bytes are not in the proto (external data, or left out of a light copy)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return True
    if _elements(tensor.dims) == 0:
        return False
    return not (
        tensor.raw_data
        or tensor.float_data
        or tensor.int32_data
        or tensor.int64_data
        or tensor.double_data
        or tensor.uint64_data
        or tensor.string_data
    )
