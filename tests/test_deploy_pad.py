"""Padding to alignment: pad_units (zero units, exact), pad_to_align, deploy(pad_to_align=)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import n2nonnx
from n2nonnx.cli import main
from n2nonnx.deployment import deploy
from n2nonnx.deployment.padding import pad_to_align
from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.runtime import make_session
from n2nonnx.units import pad_units

RNG = np.random.default_rng(0)


def weight(name, *shape, positive=False):
    array = RNG.standard_normal(shape).astype(np.float32) * 0.2
    return numpy_helper.from_array(np.abs(array) + 0.5 if positive else array, name)


def conv(name, source, out, channels, inputs, *, bias=True):
    inits = [weight(f"{name}.w", channels, inputs, 3, 3)]
    names = [source, f"{name}.w"]
    if bias:
        inits.append(weight(f"{name}.b", channels))
        names.append(f"{name}.b")
    return helper.make_node("Conv", names, [out], pads=[1] * 4, name=name), inits


def batchnorm(name, source, out, channels):
    inits = [weight(f"{name}.{p}", channels, positive=p == "v") for p in "sbmv"]
    node = helper.make_node(
        "BatchNormalization", [source, *(f"{name}.{p}" for p in "sbmv")], [out], name=name
    )
    return node, inits


def model(nodes_inits, inputs=3, size=8, outputs=10, last="h", flat=None):
    """A graph ``x -> nodes -> Flatten -> Gemm fc -> y`` from (node, initializers) pairs."""
    nodes, inits = [], []
    for node, more in nodes_inits:
        nodes.append(node)
        inits += more
    nodes.append(helper.make_node("Flatten", [last], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], transB=1, name="fc"))
    inits += [weight("fc.w", outputs, flat), weight("fc.b", outputs)]
    graph = helper.make_graph(
        nodes,
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return n2nonnx.load(proto)


def node(op, inputs, output, **attributes):
    return helper.make_node(op, inputs, [output], name=output, **attributes), []


def chain():
    """conv a (53) -> BN -> Sigmoid -> MaxPool -> conv b (53 in, 24 out) -> Relu -> fc."""
    return model(
        [
            conv("a", "x", "a_out", 53, 3),
            batchnorm("bn", "a_out", "bn_out", 53),
            node("Sigmoid", ["bn_out"], "act"),
            node("MaxPool", ["act"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
            conv("b", "pool", "b_out", 24, 53),
            node("Relu", ["b_out"], "h"),
        ],
        flat=24 * 4 * 4,
    )


def residual():
    """conv a (53) -> Relu -> conv b (53) -> Add(relu a, b) -> Relu -> conv c (53 in) -> fc."""
    return model(
        [
            conv("a", "x", "a_out", 53, 3),
            node("Relu", ["a_out"], "a_act"),
            conv("b", "a_act", "b_out", 53, 53),
            node("Add", ["a_act", "b_out"], "sum"),
            node("Relu", ["sum"], "sum_act"),
            conv("c", "sum_act", "c_out", 8, 53),
            node("Relu", ["c_out"], "h"),
        ],
        flat=8 * 8 * 8,
    )


def outputs(m, x):
    return make_session(m.proto).run(None, {"x": x})[0]


def assert_same(padded, reference, x):
    """Equal to rtol 1e-5 of the output's scale (onnxruntime sums 64 channels in another order)."""
    expected = outputs(reference, x)
    scale = 1e-5 * float(np.abs(expected).max())
    np.testing.assert_allclose(outputs(padded, x), expected, rtol=1e-5, atol=scale)


X = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)


def test_conv_of_53_channels_padded_to_64_is_exact():
    dense = chain()
    plan = pad_to_align(dense, 16)
    assert plan.counts == {"a": 11} and plan.widths == {"b": [53, 64]} and not plan.refused
    padded = plan.model
    assert padded.layer("a").units == 64 and padded.layer("b").in_units == 64
    assert_same(padded, dense, X)
    values = {t.name: numpy_helper.to_array(t) for t in padded.proto.graph.initializer}
    bn = next(n for n in padded.proto.graph.node if n.op_type == "BatchNormalization")
    scale, shift, mean, var = (values[name][53:] for name in bn.input[1:])
    assert not scale.any() and not shift.any() and not mean.any() and np.all(var == 1)
    assert not values[next(n for n in padded.proto.graph.node if n.name == "b").input[1]][
        :, 53:
    ].any()


def test_flatten_into_gemm_pads_every_spatial_position():
    dense = chain()
    padded = pad_units(dense, {"a": 11, "b": 8})
    assert padded.layer("fc").in_units == 32 * 4 * 4
    assert_same(padded, dense, X)


def test_residual_branches_are_padded_alike():
    dense = residual()
    plan = pad_to_align(dense, 16)
    assert plan.counts == {"a": 11, "b": 11}, plan
    assert plan.widths == {"b": [53, 64], "c": [53, 64]} and not plan.refused
    assert_same(plan.model, dense, X)
    with pytest.raises(UnsupportedOpError, match="Add 'sum' joins"):
        pad_units(dense, {"a": 11})  # one side of the residual alone cannot be exact


def test_concat_pads_the_last_segment():
    dense = model(
        [
            conv("a", "x", "a_out", 20, 3),
            conv("b", "x", "b_out", 33, 3),
            node("Concat", ["a_out", "b_out"], "cat", axis=1),
            node("Relu", ["cat"], "cat_act"),
            conv("c", "cat_act", "h", 8, 53),
        ],
        flat=8 * 8 * 8,
    )
    plan = pad_to_align(dense, 16)
    assert plan.counts == {"b": 11} and plan.widths == {"c": [53, 64]}
    assert_same(plan.model, dense, X)
    middle = pad_units(dense, {"a": 4})  # zeros inside the concat, not at its end
    assert middle.layer("c").in_units == 57
    assert_same(middle, dense, X)


def test_what_cannot_be_padded_is_left_alone_with_its_reason():
    softmax = model(
        [
            conv("a", "x", "a_out", 53, 3),
            node("Softmax", ["a_out"], "soft", axis=1),
            conv("b", "soft", "h", 8, 53),
        ],
        flat=8 * 8 * 8,
    )
    plan = pad_to_align(softmax, 16)
    assert plan.model is softmax and not plan.counts
    assert "mix" in plan.refused["b"], plan.refused
    from_input = model([conv("a", "x", "h", 8, 53)], inputs=53, flat=8 * 8 * 8)
    assert "graph input 'x'" in pad_to_align(from_input, 16).refused["a"]
    with pytest.raises(UnsupportedOpError, match="Softmax"):
        pad_units(softmax, {"a": 11})


def test_padding_reaching_a_graph_output_is_refused():
    dense = chain()
    with pytest.raises(UnsupportedOpError, match="graph output"):
        pad_units(dense, {"fc": 2})
    with pytest.raises(InvalidArgumentError, match="count"):
        pad_units(dense, {"a": -1})
    with pytest.raises(InvalidArgumentError, match="no layer"):
        pad_units(dense, {"nope": 1})


def test_deploy_pads_and_verifies(tmp_path):
    dense = chain()
    result = deploy(dense, pad_to_align=True, timing=False, samples=16)
    record = result.summary["removal"]
    assert record["chosen"] == "padded" and record["padding"]["widths"] == {"b": [53, 64]}
    assert result.verification.passed
    assert result.model.layer("b").in_units == 64
    assert "padding            11 zero units" in result.format()
    timed = deploy(dense, pad_to_align=True, samples=16)
    assert set(timed.summary["removal"]["ratios"]) == {"none", "padded"}
    plain = deploy(dense, timing=False, samples=16)
    assert plain.summary["removal"]["padding"] is None and plain.model.layer("b").in_units == 53


def test_deploy_records_what_it_left_alone(tmp_path, capsys):
    source, out, report = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    softmax = model(
        [
            conv("a", "x", "a_out", 53, 3),
            node("Softmax", ["a_out"], "soft", axis=1),
            conv("b", "soft", "h", 8, 53),
        ],
        flat=8 * 8 * 8,
    )
    onnx.save(softmax.proto, source)
    argv = ["deploy", str(source), "-o", str(out), "--pad-to-align", "--no-timing"]
    assert main([*argv, "--samples", "8", "--json", str(report)]) == 0
    padding = json.loads(report.read_text())["removal"]["padding"]
    assert padding["added"] == 0 and "mix" in padding["refused"]["b"]
    assert "left unaligned: b:" in capsys.readouterr().out


@pytest.mark.parametrize("align", ["0", "1"])
def test_pad_to_align_without_alignment_is_bad_input(tmp_path, capsys, align):
    source, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(chain().proto, source)
    argv = ["deploy", str(source), "-o", str(out), "--pad-to-align", "--align", align]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "error:" in err[0] and "--pad-to-align" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(("pad", "align"), [("yes", 16), (True, 0), (True, -2)])
def test_bad_pad_to_align_in_the_api(pad, align):
    with pytest.raises(InvalidArgumentError, match="align"):
        deploy(chain(), pad_to_align=pad, align=align)


def per_channel(name, fill=None):
    array = RNG.standard_normal((53, 1, 1)).astype(np.float32) * 0.2 + 1.0
    return numpy_helper.from_array(array if fill is None else np.full_like(array, fill), name)


BETWEEN = {  # op name -> nodes from "a_out" to "mid", with their initializers
    "Relu": [node("Relu", ["a_out"], "mid")],
    "LeakyRelu": [node("LeakyRelu", ["a_out"], "mid", alpha=0.1)],
    "Tanh": [node("Tanh", ["a_out"], "mid")],
    "Elu": [node("Elu", ["a_out"], "mid")],
    "Exp": [node("Exp", ["a_out"], "mid")],
    "AveragePool": [node("AveragePool", ["a_out"], "mid", kernel_shape=[3, 3], pads=[1] * 4)],
    "InstanceNormalization": [
        (
            helper.make_node(
                "InstanceNormalization", ["a_out", "in.s", "in.b"], ["mid"], name="in"
            ),
            [weight("in.s", 53), weight("in.b", 53)],
        )
    ],
    "ReduceMean-spatial": [node("ReduceMean", ["a_out"], "mid", axes=[2, 3], keepdims=1)],
    "Mul-constant": [
        (helper.make_node("Mul", ["a_out", "k"], ["mid"], name="m"), [per_channel("k")])
    ],
    "Div-constant": [
        (helper.make_node("Div", ["a_out", "k"], ["mid"], name="d"), [per_channel("k")])
    ],
    "PRelu": [(helper.make_node("PRelu", ["a_out", "k"], ["mid"], name="p"), [per_channel("k")])],
    "Transpose-twice": [
        node("Transpose", ["a_out"], "t", perm=[0, 2, 3, 1]),
        node("Transpose", ["t"], "mid", perm=[0, 3, 1, 2]),
    ],
    "Mul-gate": [node("Sigmoid", ["a_out"], "g"), node("Mul", ["a_out", "g"], "mid")],
}
REFUSED = {
    "Log": [node("Relu", ["a_out"], "r"), node("Log", ["r"], "mid")],
    "Softmax": [node("Softmax", ["a_out"], "mid", axis=1)],
    "ReduceMean-channels": [node("ReduceMean", ["a_out"], "mid", axes=[1], keepdims=1)],
}


def between(nodes):
    size = 1 if any(n.op_type == "ReduceMean" for n, _ in nodes) else 8
    return model(
        [conv("a", "x", "a_out", 53, 3), *nodes, conv("b", "mid", "h", 8, 53)],
        flat=8 * size * size,
    )


@pytest.mark.parametrize("op", sorted(BETWEEN))
def test_padding_passes_ops_exactly(op):
    dense = between(BETWEEN[op])
    plan = pad_to_align(dense, 16)
    assert plan.widths == {"b": [53, 64]}, plan.refused
    assert_same(plan.model, dense, X)


@pytest.mark.parametrize("op", sorted(REFUSED))
def test_padding_refuses_ops_that_would_not_be_exact(op):
    dense = between(REFUSED[op])
    plan = pad_to_align(dense, 16)
    assert not plan.counts and plan.refused["b"], plan
    assert plan.model is dense
