"""The harness for the unit-rule tests: one op between a layer and a consumer, probed in onnxruntime.

Each case is ``x -> L (a layer with 6 units) -> the op under test -> C (a consumer layer) -> y``.
Two facts are checked against onnxruntime for every op:

* **trace**: perturbing L's unit ``u`` (its weights) moves exactly the positions of the op's
  output where the traced unit map says ``u`` sits, unless the trace says the op mixes
  units (then other positions move too, and the edge must be marked mixed);
* **removal**: where the rules say L's units can be removed, removing unit ``u`` with
  :func:`n2nonnx.units.remove_units` gives the outputs of the model whose consumer never
  reads ``u`` (its weight zeroed where ``u`` arrives); where they say it cannot, the
  layer's ``removal_blocker`` names the op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import n2nonnx
from n2nonnx.graph.trace import follow
from n2nonnx.graph.units import RULES
from n2nonnx.runtime import make_session
from n2nonnx.units import remove_units

UNITS = 6

# (nodes, output tensor, initializers) of the op under test, given its input tensor
MakeOp = Callable[[str], tuple[list[onnx.NodeProto], str, list[onnx.TensorProto]]]


@dataclass(frozen=True)
class Case:
    """One op under test.

    Attributes:
        op: the op type (its rule must be in ``family``).
        make: builds the op's nodes from L's output tensor.
        image: L is a Conv on 1x3x5x5 (units on axis 1); else a MatMul on 2x4x5 (units last).
        mixes: the op is expected to mix units along their axis.
    """

    op: str
    make: MakeOp
    image: bool = True
    mixes: bool = False

    @property
    def id(self) -> str:
        return self.op + ("-img" if self.image else "-seq")


def constant(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def unary(op: str, **attributes) -> MakeOp:
    return lambda t: ([helper.make_node(op, [t], ["o"], name="op", **attributes)], "o", [])


def _build(case: Case, rng: np.random.Generator) -> onnx.ModelProto:
    if case.image:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])
        layer = helper.make_node(
            "Conv", ["x", "lw", "lb"], ["l"], name="L", pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        )
        inits = [
            constant("lw", rng.standard_normal((UNITS, 3, 3, 3)).astype(np.float32)),
            constant("lb", rng.standard_normal(UNITS).astype(np.float32)),
        ]
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5])
        layer = helper.make_node("MatMul", ["x", "lw"], ["lm"], name="L")
        bias = helper.make_node("Add", ["lm", "lb"], ["l"], name="L_bias")
        layer = [layer, bias]
        inits = [
            constant("lw", rng.standard_normal((5, UNITS)).astype(np.float32)),
            constant("lb", rng.standard_normal(UNITS).astype(np.float32)),
        ]
    nodes, out, extra = case.make("l")
    graph = helper.make_graph(
        [*(layer if isinstance(layer, list) else [layer]), *nodes],
        "unit_rule",
        [x],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=inits + extra,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _with_consumer(proto: onnx.ModelProto, tensor: str, axis: int, rank: int, size: int, rng):
    """The model with a consumer layer C reading ``tensor`` (units on ``axis``) as output y."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    del graph.output[:]
    if rank == 4 and axis == 1:
        weight = rng.standard_normal((3, size, 1, 1)).astype(np.float32)
        graph.node.append(helper.make_node("Conv", [tensor, "cw"], ["y"], name="C"))
    elif axis == rank - 1:
        weight = rng.standard_normal((size, 3)).astype(np.float32)
        graph.node.append(helper.make_node("MatMul", [tensor, "cw"], ["y"], name="C"))
    else:
        return None
    graph.initializer.append(constant("cw", weight))
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def _run(proto: onnx.ModelProto, x: np.ndarray, output: str | None = None) -> np.ndarray:
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    if output is not None and output not in [o.name for o in model.graph.output]:
        model.graph.output.append(helper.make_empty_tensor_value_info(output))
    session = make_session(model, ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"x": x}), strict=True))
    return values[output or names[0]]


def _perturbed(proto: onnx.ModelProto, unit: int) -> onnx.ModelProto:
    """The model with L's weights of ``unit`` shifted (a bias shift would be invisible to a
    softmax or a normalisation over the positions the unit occupies)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for tensor in model.graph.initializer:
        if tensor.name == "lw":
            value = numpy_helper.to_array(tensor).copy()
            if value.ndim == 4:
                value[unit] += 1.5
            else:
                value[:, unit] += 1.5
            tensor.CopyFrom(constant("lw", value))
    return model


def check_family(case: Case, family: str) -> None:
    """Both checks for one op (see the module docstring)."""
    assert RULES[case.op].family == family, f"{case.op}'s rule is in {RULES[case.op].family}"
    rng = np.random.default_rng(0)
    proto = _build(case, rng)
    x = rng.standard_normal((2, 3, 5, 5) if case.image else (2, 4, 5)).astype(np.float32)
    out = proto.graph.output[0].name
    model = n2nonnx.load(proto)
    layer = model.layer("L")
    found, blocker = follow(model.index, layer.preact, layer.out_feature_axis)
    trace = found[out]
    if case.mixes and trace.unit_map is None:  # the units' axis is gone (reduced over)
        assert trace.mixed and blocker is not None and case.op in blocker, (trace, blocker)
        return
    assert trace.unit_map is not None and trace.axis is not None, "the unit map was lost"
    base = _run(proto, x)
    rank, axis = base.ndim, trace.axis
    moved_elsewhere = False
    for unit in range(UNITS):
        changed = np.abs(_run(_perturbed(proto, unit), x) - base) > 1e-6
        along = np.moveaxis(changed, axis, 0).reshape(changed.shape[axis], -1).any(axis=1)
        expected = np.asarray(trace.unit_map) == unit
        assert not (expected & ~along).any(), f"unit {unit}: a traced position did not move"
        moved_elsewhere |= bool((along & ~expected).any())
    assert moved_elsewhere == case.mixes, f"probe mixed={moved_elsewhere}, case says {case.mixes}"
    assert trace.mixed == case.mixes, f"trace mixed={trace.mixed}, probe says {case.mixes}"
    if case.mixes:
        assert blocker is not None and case.op in blocker
        return
    consumed = _with_consumer(proto, out, axis, rank, base.shape[axis], rng)
    if consumed is None:
        return
    _check_removal(consumed, x, axis, np.asarray(trace.unit_map))


def _check_removal(proto: onnx.ModelProto, x: np.ndarray, axis: int, unit_map: np.ndarray) -> None:
    model = n2nonnx.load(proto)
    layer = model.layer("L")
    assert layer.removal_blocker is None, layer.removal_blocker
    unit = int(unit_map[unit_map >= 0][0])
    removed = remove_units(model, {"L": [unit]})
    reference = onnx.ModelProto()
    reference.CopyFrom(proto)
    for tensor in reference.graph.initializer:
        if tensor.name == "cw":
            weight = numpy_helper.to_array(tensor).copy()
            positions = np.flatnonzero(unit_map == unit)
            if weight.ndim == 4:
                weight[:, positions] = 0
            else:
                weight[positions, :] = 0
            tensor.CopyFrom(constant("cw", weight))
    expected = _run(reference, x)
    actual = _run(removed.proto, x)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    assert model.layer("L").units - 1 == removed.layer("L").units
