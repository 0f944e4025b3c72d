"""Dead units: units with no path to an output, or none from an input, removed exactly.

On the layer view's unit graph (a unit reads an input unit where some weight between them
is non-zero; edges follow the unit maps through activations, pooling, residual adds,
concat and reshapes):

* a unit with **no path to a graph output** contributes nothing: removing it is exact;
* a unit with **no path from a graph input** outputs a constant. Where every position it
  reaches in a consumer is constant too, that constant is measured in onnxruntime and
  folded into the consumer's bias (exact for Gemm / MatMul consumers; for a convolution
  only when the constant is zero, since padding makes a non-zero constant position-
  dependent), then the unit is removed. Otherwise it stays.

Units joined element-wise with a unit that stays (a residual Add, an N2NSkip Add) stay
too, and a grouped convolution loses whole groups only, so the result is always a
valid :func:`~n2nonnx.deployment.structured.remove_units` request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.graph.layers import Edge, Layer
from n2nonnx.graph.ops import REDUCTIONS
from n2nonnx.model import Model

log = logging.getLogger(__name__)

# Ops that mix units (a unit's value depends on other units): unit maps through them are
# not trusted.
MIXING_OPS = frozenset(
    {
        "LayerNormalization",
        "GroupNormalization",
        "Softmax",
        "LogSoftmax",
        "Hardmax",
        "LpNormalization",
        "MatMul",
        "Gemm",
        "TopK",
        "Einsum",
        "Attention",
    }
    | REDUCTIONS
)


@dataclass
class DeadUnits:
    """What :func:`find_dead_units` found.

    Attributes:
        remove: layer name -> units to remove (a :func:`remove_units` request).
        no_output: layer name -> units without a path to any output.
        no_input: layer name -> units without a path from any input (constant outputs).
        kept_constant: layer name -> constant units that stay (not foldable or coupled).
        bias_deltas: layer name -> amount to add to its bias (the folded constants).
    """

    remove: dict[str, np.ndarray] = field(default_factory=dict)
    no_output: dict[str, np.ndarray] = field(default_factory=dict)
    no_input: dict[str, np.ndarray] = field(default_factory=dict)
    kept_constant: dict[str, np.ndarray] = field(default_factory=dict)
    bias_deltas: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Units to remove."""
        return int(sum(len(u) for u in self.remove.values()))


def connectivity(layer: Layer, weight: np.ndarray) -> np.ndarray:
    """Boolean (units, in_units): which input units each output unit reads (non-zero weight)."""
    nonzero = weight != 0
    if layer.op == "ConvTranspose":
        if layer.groups > 1:
            return np.ones((layer.units, layer.in_units), dtype=bool)  # conservative
        return nonzero.reshape(nonzero.shape[0], nonzero.shape[1], -1).any(axis=2).T
    if layer.unit_axis != 0:
        nonzero = np.moveaxis(nonzero, layer.unit_axis, 0)
    matrix = nonzero.reshape(nonzero.shape[0], nonzero.shape[1], -1).any(axis=2)
    return _grouped_matrix(matrix, layer)


def _grouped_matrix(matrix: np.ndarray, layer: Layer) -> np.ndarray:
    if layer.groups == 1:
        return matrix
    per_in, per_out = layer.in_units // layer.groups, layer.units // layer.groups
    full = np.zeros((layer.units, layer.in_units), dtype=bool)
    for group in range(layer.groups):
        rows = slice(group * per_out, (group + 1) * per_out)
        full[rows, group * per_in : (group + 1) * per_in] = matrix[rows]
    return full


def _positions(edge: Edge, size: int) -> np.ndarray | None:
    """The edge's unit map, or None where it cannot be trusted (unknown, or through a mixing op)."""
    if (
        edge.unit_map is None
        or any(op in MIXING_OPS for op in edge.via)
        or len(edge.unit_map) != size
    ):
        return None
    return np.asarray(edge.unit_map)


def find_dead_units(model: Model, *, seed: int = 0) -> DeadUnits:
    """Find the units that can be removed exactly, and the bias folds that make it exact.

    Args:
        model: a model with its masks folded (weights hold their zeros).
        seed: seed of the random inputs used to measure constant units.

    Returns:
        The analysis (see :class:`DeadUnits`).
    """
    layers = model.layers
    by_name = {layer.name: layer for layer in layers}
    matrix = {
        layer.name: connectivity(layer, np.asarray(model.initializer(layer.weight)))
        for layer in layers
    }
    reached_in, reached_out = _reached_from_inputs(layers, matrix)
    useful_in, useful_out = _useful_to_outputs(layers, by_name, matrix)
    result = DeadUnits()
    for layer in layers:
        no_out = np.flatnonzero(~useful_out[layer.name])
        no_in = np.flatnonzero(~reached_out[layer.name])
        if len(no_out):
            result.no_output[layer.name] = no_out
        if len(no_in):
            result.no_input[layer.name] = no_in
    constants = _measure_constants(model, layers, reached_in, useful_in, seed)
    droppable = {}
    for layer in layers:
        constant = ~reached_in[layer.name] & (constants.get(layer.name) is not None)
        foldable = _foldable(layer, constants.get(layer.name))
        droppable[layer.name] = ~useful_in[layer.name] | (constant & foldable)
    removed = {layer.name: ~useful_out[layer.name] | ~reached_out[layer.name] for layer in layers}
    _settle(layers, by_name, removed, droppable)
    for layer in layers:
        units = np.flatnonzero(removed[layer.name])
        if len(units):
            result.remove[layer.name] = units
        kept_constant = np.flatnonzero(
            ~reached_out[layer.name] & useful_out[layer.name] & ~removed[layer.name]
        )
        if len(kept_constant):
            result.kept_constant[layer.name] = kept_constant
    result.bias_deltas = _bias_deltas(model, layers, removed, reached_in, useful_in, constants)
    return result


def _reached_from_inputs(
    layers: list[Layer], matrix: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Forward pass: which input positions and units of each layer a graph input reaches.

    Args:
        layers: the layers in graph order.
        matrix: layer name -> its (units, in_units) connectivity.

    Returns:
        (layer name -> reached input positions, layer name -> reached units), boolean.
    """
    reached_in: dict[str, np.ndarray] = {}
    reached_out: dict[str, np.ndarray] = {}
    for layer in layers:
        reached = np.zeros(layer.in_units, dtype=bool)
        for edge in layer.fed_by:
            source = None if edge.source.startswith("input:") else reached_out.get(edge.source)
            m = _positions(edge, layer.in_units)
            if m is None:
                if source is None or source.any():
                    reached[:] = True
                continue
            hit = m >= 0
            reached[hit] |= True if source is None else source[m[hit]]
        reached_in[layer.name] = reached
        reached_out[layer.name] = np.asarray((matrix[layer.name] & reached[None, :]).any(axis=1))
    return reached_in, reached_out


def _useful_to_outputs(
    layers: list[Layer], by_name: dict[str, Layer], matrix: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Backward pass: which input positions and units of each layer reach a graph output.

    Args:
        layers: the layers in graph order.
        by_name: layer name -> layer.
        matrix: layer name -> its (units, in_units) connectivity.

    Returns:
        (layer name -> useful input positions, layer name -> useful units), boolean.
    """
    useful_in: dict[str, np.ndarray] = {}
    useful_out: dict[str, np.ndarray] = {}
    for layer in reversed(layers):
        useful = np.zeros(layer.units, dtype=bool)
        for edge in layer.feeds:
            if edge.target.startswith("output:"):
                if edge.unit_map is None:
                    useful[:] = True
                else:
                    useful[np.asarray(edge.unit_map)[np.asarray(edge.unit_map) >= 0]] = True
                continue
            target = by_name[edge.target]
            m = _positions(edge, target.in_units)
            wanted = useful_in.get(edge.target)
            if m is None or wanted is None:
                if wanted is None or wanted.any():
                    useful[:] = True
                continue
            hit = m >= 0
            useful[m[hit & wanted]] = True
        useful_out[layer.name] = useful
        useful_in[layer.name] = np.asarray((matrix[layer.name] & useful[:, None]).any(axis=0))
    return useful_in, useful_out


# layer name -> (source layer name, unit map into this layer or None) for each feeding layer
_Sources = dict[str, list[tuple[str, np.ndarray | None]]]


def _settle(
    layers: list[Layer],
    by_name: dict[str, Layer],
    removed: dict[str, np.ndarray],
    droppable: dict[str, np.ndarray],
) -> None:
    """Shrink the candidate set until it is a consistent removal (in place).

    Args:
        layers: the layers in graph order.
        by_name: layer name -> layer.
        removed: layer name -> boolean units to remove (narrowed in place).
        droppable: layer name -> boolean input positions that may lose their source.
    """
    changed = True
    while changed:
        changed, sources_at = _settle_edges(layers, by_name, removed, droppable)
        for target_name, sources in sources_at.items():
            changed |= _settle_target(by_name[target_name], sources, removed)


def _settle_edges(
    layers: list[Layer],
    by_name: dict[str, Layer],
    removed: dict[str, np.ndarray],
    droppable: dict[str, np.ndarray],
) -> tuple[bool, _Sources]:
    """Keep the units that feed a graph output or a position that may not be dropped.

    Args:
        layers: the layers in graph order.
        by_name: layer name -> layer.
        removed: layer name -> boolean units to remove (narrowed in place).
        droppable: layer name -> boolean input positions that may lose their source.

    Returns:
        Whether a candidate layer unit was kept (outputs do not count), and each
        consumer's sources.
    """
    changed = False
    sources_at: _Sources = {}
    for layer in layers:
        for edge in layer.feeds:
            if edge.target.startswith("output:") or edge.target not in by_name:
                if edge.unit_map is None:
                    removed[layer.name][:] = False
                else:
                    read = np.asarray(edge.unit_map)
                    removed[layer.name][read[read >= 0]] = False
                continue
            target = by_name[edge.target]
            m = _positions(edge, target.in_units)
            sources_at.setdefault(edge.target, []).append((layer.name, m))
            ok = droppable[edge.target]
            if m is None:
                if not ok.all():
                    changed |= bool(removed[layer.name].any())
                    removed[layer.name][:] = False
                continue
            bad = m[(m >= 0) & ~ok]
            if removed[layer.name][bad].any():
                removed[layer.name][bad] = False
                changed = True
    return changed, sources_at


def _settle_target(
    target: Layer, sources: list[tuple[str, np.ndarray | None]], removed: dict[str, np.ndarray]
) -> bool:
    """Make one consumer's sources agree: an input position goes only if all its sources go.

    Args:
        target: the consuming layer.
        sources: (source layer name, unit map or None) for each layer feeding it.
        removed: layer name -> boolean units to remove (narrowed in place).

    Returns:
        Whether any unit was kept that was to be removed.
    """
    changed = False
    gone = np.ones(target.in_units, dtype=bool)
    fed = np.zeros(target.in_units, dtype=bool)
    for source, m in sources:
        if m is None:
            gone &= removed[source].all()
            fed[:] = True
            continue
        hit = m >= 0
        fed |= hit
        gone[hit] &= removed[source][m[hit]]
    for source, m in sources:  # a position some sources leave and others keep: keep all
        if m is None:
            if not gone[fed].all() and removed[source].any():
                removed[source][:] = False
                changed = True
            continue
        hit = m >= 0
        keep = hit & ~gone
        if removed[source][m[keep]].any():
            removed[source][m[keep]] = False
            changed = True
    if (gone & fed).all() and not removed[target.name].all():
        # The target keeps units but would read nothing: keep one input position.
        for source, m in sources:
            if m is None:
                removed[source][:] = False
            elif (m >= 0).any():
                removed[source][m[m >= 0][0]] = False
        return True
    if target.groups > 1:
        changed |= _whole_groups(target, removed, gone & fed, sources)
    return changed


def _whole_groups(target: Layer, removed, gone_inputs: np.ndarray, sources) -> bool:
    """A grouped conv loses whole groups: its inputs go only with all of the group's units."""
    per_in, per_out = target.in_units // target.groups, target.units // target.groups
    mine = removed[target.name]
    changed = False
    for group in range(target.groups):
        outs = mine[group * per_out : (group + 1) * per_out]
        if outs.any() and not outs.all():
            outs[:] = False
            changed = True
        if not outs.all() and gone_inputs[group * per_in : (group + 1) * per_in].any():
            for source, m in sources:
                if m is None:
                    continue
                block = m[group * per_in : (group + 1) * per_in]
                block = block[block >= 0]
                if removed[source][block].any():
                    removed[source][block] = False
                    changed = True
    return changed


def _measure_constants(model, layers, reached_in, useful_in, seed) -> dict[str, np.ndarray | None]:
    """For each layer with useful constant input positions: their values (None: not constant)."""
    wanted = [la for la in layers if (~reached_in[la.name] & useful_in[la.name]).any()]
    if not wanted:
        return {}
    from n2nonnx.runtime import make_session

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    present = {o.name for o in proto.graph.output}
    for tensor in {la.input for la in wanted} - present:
        proto.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    session = make_session(proto, ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    feeds = random_inputs(model, batch=2, rng=rng)
    first = dict(zip(names, session.run(None, feeds), strict=True))
    second = dict(
        zip(names, session.run(None, random_inputs(model, batch=2, rng=rng)), strict=True)
    )
    values: dict[str, np.ndarray | None] = {}
    for layer in wanted:
        a, b = first[layer.input], second[layer.input]
        a_units = np.moveaxis(a, layer.in_feature_axis, 0).reshape(layer.in_units, -1)
        b_units = np.moveaxis(b, layer.in_feature_axis, 0).reshape(layer.in_units, -1)
        constant = (a_units == a_units[:, :1]).all(axis=1) & (b_units == a_units[:, :1]).all(axis=1)
        values[layer.name] = np.where(constant, a_units[:, 0], np.nan)
    return values


def _foldable(layer: Layer, values: np.ndarray | None) -> np.ndarray:
    if values is None:
        return np.zeros(layer.in_units, dtype=bool)
    if layer.op in ("Gemm", "MatMul"):
        return ~np.isnan(values)
    return values == 0  # a convolution: only a zero constant is position-independent


def _bias_deltas(model, layers, removed, reached_in, useful_in, constants) -> dict[str, np.ndarray]:
    """Per consumer: ``W[:, j] * c_j`` summed over the constant input positions that go."""
    by_name = {layer.name: layer for layer in layers}
    deltas = {}
    for layer in layers:
        values = constants.get(layer.name)
        if values is None or layer.op not in ("Gemm", "MatMul"):
            continue
        gone = np.zeros(layer.in_units, dtype=bool)
        for edge in layer.fed_by:
            if edge.source in by_name and edge.unit_map is not None:
                m = np.asarray(edge.unit_map)
                hit = m >= 0
                gone[hit] |= removed[edge.source][m[hit]]
        fold = gone & ~reached_in[layer.name] & useful_in[layer.name] & ~np.isnan(values)
        if not fold.any():
            continue
        weight = np.asarray(model.initializer(layer.weight), dtype=np.float64)
        weight = np.moveaxis(weight, layer.unit_axis, 0)  # (units, in)
        delta = weight[:, fold] @ values[fold].astype(np.float64)
        if np.any(delta != 0):
            deltas[layer.name] = delta
    return deltas


def add_to_biases(model: Model, deltas: dict[str, np.ndarray]) -> Model:
    """A copy of ``model`` whose layers' biases have ``deltas`` added (a bias is created where missing).

    Args:
        model: the model (not modified).
        deltas: layer name -> one value per output unit.

    Returns:
        The new model.
    """
    if not deltas:
        return model
    from n2nonnx.tags import replace_tensor

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    node_of = dict(zip(model.index.node_names, graph.node, strict=True))
    extra_nodes = []
    for name, delta in deltas.items():
        layer = model.layer(name)
        node = node_of[layer.name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(initializers[layer.weight].data_type)
        if layer.bias is not None:
            old = numpy_helper.to_array(initializers[layer.bias])
            new = (
                old.astype(np.float64) + delta.reshape(old.shape)
                if old.size == delta.size
                else old + delta.reshape(-1)
            ).astype(old.dtype)
            replace_tensor(initializers[layer.bias], numpy_helper.from_array(new, layer.bias))
            continue
        bias_name = f"{layer.weight}/folded_bias"
        if layer.op in ("Conv", "ConvTranspose") or (
            layer.op == "Gemm" and layer.out_feature_axis == 1
        ):
            graph.initializer.append(numpy_helper.from_array(delta.astype(dtype), bias_name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = bias_name
            continue
        # MatMul (or a column-major Gemm): a bias Add after the layer.
        rank = model.index.rank(node.output[0]) or 2
        shape = [1] * (rank - layer.out_feature_axis - 1)
        graph.initializer.append(
            numpy_helper.from_array(delta.astype(dtype).reshape(-1, *shape), bias_name)
        )
        raw = f"{node.output[0]}/before_folded_bias"
        for other in graph.node:
            for position, tensor in enumerate(other.input):
                if tensor == node.output[0]:
                    other.input[position] = raw if other is node else tensor
        out = node.output[0]
        node.output[0] = raw
        extra_nodes.append(
            (
                node,
                helper.make_node("Add", [raw, bias_name], [out], name=f"{layer.name}/folded_bias"),
            )
        )
    for anchor, extra in extra_nodes:
        position = list(graph.node).index(anchor)
        graph.node.insert(position + 1, extra)
    if (
        extra_nodes
    ):  # the tensors before the new bias Adds need their shapes (remove_units reads them)
        from n2nonnx.graph.normalize import infer_shapes

        proto = infer_shapes(proto)
    return model.with_proto(proto)


def random_inputs(model: Model, *, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Standard-normal inputs of the model's input shapes (symbolic batch set to ``batch``).

    Args:
        model: the model.
        batch: size of a symbolic batch dimension.
        rng: the random generator.

    Returns:
        Input name -> array.
    """
    from n2nonnx.errors import ShapeError

    feeds = {}
    for info in model.graph_inputs:
        shape = [
            batch if (i == 0 and not isinstance(d, int)) else d
            for i, d in enumerate(info.shape or ())
        ]
        dims = [d for d in shape if isinstance(d, int)]
        if len(dims) != len(shape):
            raise ShapeError(
                f"input {info.name!r} has shape {info.shape} with unknown sizes besides the batch; "
                "pass --input-shape NAME=1x3x32x32"
            )
        dtype = np.dtype(info.dtype) if info.dtype != "unknown" else np.dtype(np.float32)
        feeds[info.name] = rng.standard_normal(dims).astype(dtype)
    return feeds
