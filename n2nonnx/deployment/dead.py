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
valid :func:`~n2nonnx.units.remove_units` request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model
from n2nonnx.units.reach import liveness, unit_matrices
from n2nonnx.units.settle import settle_removal

log = logging.getLogger(__name__)


@dataclass
class DeadUnits:
    """What :func:`find_dead_units` found.

    Attributes:
        remove: layer name -> units to remove (a :func:`remove_units` request).
        no_output: layer name -> units without a path to any output.
        no_input: layer name -> units without a path from any input (constant outputs).
        kept_constant: layer name -> constant units that stay (not foldable or coupled).
        bias_deltas: layer name -> amount to add to its bias (the folded constants).
        blocked: layer name -> (dead units kept, why): units that cannot be removed
            through the ops they reach (:attr:`~n2nonnx.graph.Layer.removal_blocker`).
        analysis: what the search worked out (liveness, constants, droppable inputs), kept so
            that :meth:`restricted` can narrow the removal (alignment keeps some units).
    """

    remove: dict[str, np.ndarray] = field(default_factory=dict)
    no_output: dict[str, np.ndarray] = field(default_factory=dict)
    no_input: dict[str, np.ndarray] = field(default_factory=dict)
    kept_constant: dict[str, np.ndarray] = field(default_factory=dict)
    bias_deltas: dict[str, np.ndarray] = field(default_factory=dict)
    blocked: dict[str, tuple[int, str]] = field(default_factory=dict)
    analysis: _Analysis | None = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        """Units to remove."""
        return int(sum(len(u) for u in self.remove.values()))

    def candidates(self) -> dict[str, np.ndarray]:
        """Layer name -> boolean units to remove (a fresh copy of :attr:`remove`)."""
        if self.analysis is None:
            raise InvalidArgumentError("this DeadUnits was not made by find_dead_units")
        removed = {la.name: np.zeros(la.units, dtype=bool) for la in self.analysis.layers}
        for name, units in self.remove.items():
            removed[name][units] = True
        return removed

    def settle(self, removed: dict[str, np.ndarray]) -> None:
        """Narrow a subset of :meth:`candidates` to a consistent removal (in place).

        See :func:`~n2nonnx.units.settle.settle_removal`; keeping a unit can force keeping
        the units joined with it.
        """
        if self.analysis is None:
            raise InvalidArgumentError("this DeadUnits was not made by find_dead_units")
        a = self.analysis
        settle_removal(a.layers, a.by_name, removed, a.droppable)

    def restricted(self, model: Model, removed: Mapping[str, np.ndarray]) -> DeadUnits:
        """The same analysis removing only ``removed`` (a subset of :meth:`candidates`).

        The removal is settled first; the constants folded into biases and the constant units
        that stay are worked out again for it.

        Args:
            model: the model :func:`find_dead_units` analysed.
            removed: layer name -> boolean units to remove.

        Returns:
            A new :class:`DeadUnits`.
        """
        if self.analysis is None:
            raise InvalidArgumentError("this DeadUnits was not made by find_dead_units")
        mine = self.candidates()
        narrowed = {name: mine[name] & np.asarray(removed.get(name, False)) for name in mine}
        self.settle(narrowed)
        result = DeadUnits(
            no_output=self.no_output,
            no_input=self.no_input,
            blocked=self.blocked,
            analysis=self.analysis,
        )
        _collect(model, self.analysis, narrowed, result)
        return result


@dataclass
class _Analysis:
    """What :func:`find_dead_units` worked out, kept to narrow the removal later."""

    layers: list[Layer]
    by_name: dict[str, Layer]
    reached_in: dict[str, np.ndarray]
    useful_in: dict[str, np.ndarray]
    reached_out: dict[str, np.ndarray]
    useful_out: dict[str, np.ndarray]
    constants: dict[str, np.ndarray | None]
    droppable: dict[str, np.ndarray]


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
    alive = liveness(layers, unit_matrices(model))
    reached_in, reached_out = alive.reached_in, alive.reached_out
    useful_in, useful_out = alive.useful_in, alive.useful_out
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
    removed = {layer.name: alive.dead(layer.name) for layer in layers}
    for layer in layers:
        if layer.removal_blocker is not None and removed[layer.name].any():
            result.blocked[layer.name] = (int(removed[layer.name].sum()), layer.removal_blocker)
            removed[layer.name][:] = False
    settle_removal(layers, by_name, removed, droppable)
    result.analysis = _Analysis(
        layers, by_name, reached_in, useful_in, reached_out, useful_out, constants, droppable
    )
    _collect(model, result.analysis, removed, result)
    return result


def _collect(model: Model, a: _Analysis, removed: dict[str, np.ndarray], result: DeadUnits) -> None:
    """Fill ``result``'s removal, kept constant units and bias folds for a settled ``removed``."""
    for layer in a.layers:
        units = np.flatnonzero(removed[layer.name])
        if len(units):
            result.remove[layer.name] = units
        kept_constant = np.flatnonzero(
            ~a.reached_out[layer.name] & a.useful_out[layer.name] & ~removed[layer.name]
        )
        if len(kept_constant):
            result.kept_constant[layer.name] = kept_constant
    result.bias_deltas = _bias_deltas(
        model, a.layers, removed, a.reached_in, a.useful_in, a.constants
    )


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
            if edge.source in by_name and edge.positions is not None:
                m = np.asarray(edge.positions)
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
    from n2nonnx.data.memory import check_fits_memory
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
        # drawn in float64, then cast: both copies are held at once
        check_fits_memory(
            int(np.prod(dims, dtype=object)) * (8 + dtype.itemsize),
            f"{batch:,} random inputs of shape {tuple(dims[1:])} for {info.name!r}",
            "pass fewer --samples (samples=) or --data",
        )
        feeds[info.name] = rng.standard_normal(dims).astype(dtype)
    return feeds
