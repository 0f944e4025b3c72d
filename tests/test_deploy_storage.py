"""Compact storage on every model: IR-3 models with initializers as inputs, int8 weights, reasons."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import n2nonnx
from n2nonnx.deployment import deploy
from n2nonnx.deployment.dead import random_inputs
from n2nonnx.deployment.quantize import runtime_precision
from n2nonnx.deployment.storage import compact_storage, initializers_out_of_inputs
from n2nonnx.runtime import make_session


def ir3_mlp(path, opset=13, density=0.1, seed=0):
    """A Caffe2-era layout: IR version 3, every initializer also listed in graph.input."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in (("w1", (64, 40)), ("w2", (10, 64))):
        weight = rng.standard_normal(shape).astype(np.float32)
        weight[rng.random(shape) > density] = 0
        arrays[name] = weight
        arrays[name.replace("w", "b")] = np.zeros(shape[0], np.float32)
    initializers = [numpy_helper.from_array(value, name) for name, value in arrays.items()]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 40])] + [
        helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in initializers
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])]
    graph = helper.make_graph(nodes, "caffe2_era", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_ir3_initializers_in_inputs_are_compacted(tmp_path):
    source = ir3_mlp(tmp_path / "ir3.onnx")
    model = n2nonnx.load(source)
    assert model.proto.ir_version == 3 and len(model.proto.graph.input) == 5
    result = deploy(model)
    path = result.save(tmp_path / "deployed.onnx")
    deployed = onnx.load(str(path))
    assert deployed.ir_version == 4 and [v.name for v in deployed.graph.input] == ["x"]
    assert result.summary["compacted_tensors"] == 2 and result.summary["uncompacted"] == {}
    assert result.summary["inputs_moved"]["moved"] == ["w1", "b1", "w2", "b2"]
    assert "IR 3 -> 4" in result.format()
    feeds = random_inputs(model, batch=8, rng=np.random.default_rng(1))
    want = make_session(model.proto, ["CPUExecutionProvider"]).run(None, feeds)[0]
    got = make_session(deployed, ["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_moving_inputs_keeps_newer_ir_and_leaves_models_without_them(tmp_path):
    proto = onnx.load(str(ir3_mlp(tmp_path / "m.onnx")))
    proto.ir_version = 8
    moved, record = initializers_out_of_inputs(proto)
    assert moved.ir_version == 8 and len(moved.graph.input) == 1 and len(record.moved) == 4
    again, nothing = initializers_out_of_inputs(moved)
    assert again is moved and nothing.moved == []


def test_sparse_weights_left_dense_are_named_with_the_reason(tmp_path):
    proto = onnx.load(str(ir3_mlp(tmp_path / "m.onnx", density=0.45)))
    proto.ir_version = 8  # an overridable input in a newer IR: compact_storage leaves it
    skipped: dict[str, str] = {}
    _, records = compact_storage(proto, skipped=skipped)
    assert records == [] and set(skipped) == {"w1", "w2"}
    assert all("graph input" in why for why in skipped.values())
    moved, _ = initializers_out_of_inputs(proto)
    skipped.clear()
    _, records = compact_storage(moved, skipped=skipped)
    # 45% dense: values + gaps would take 56% of the dense bytes (compacted at 75% or less)
    assert {r.name for r in records} == {"w1", "w2"}
    skipped.clear()
    small = onnx.load(str(ir3_mlp(tmp_path / "s.onnx", density=0.7)))
    _, records = compact_storage(initializers_out_of_inputs(small)[0], skipped=skipped)
    assert records == [] and skipped == {}  # 70% dense: not sparse, nothing to report


@pytest.mark.parametrize("opset", [11, 12])
def test_opset_below_13_gets_the_attribute_unsqueeze(tmp_path, opset):
    proto = initializers_out_of_inputs(onnx.load(str(ir3_mlp(tmp_path / "m.onnx", opset=opset))))[0]
    compacted, records = compact_storage(proto)
    onnx.checker.check_model(compacted, full_check=True)
    unsqueeze = [n for n in compacted.graph.node if n.op_type == "Unsqueeze"]
    assert records and all(len(n.input) == 1 for n in unsqueeze)
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 40)).astype(np.float32)}
    np.testing.assert_array_equal(
        make_session(compacted, ["CPUExecutionProvider"]).run(None, feeds)[0],
        make_session(proto, ["CPUExecutionProvider"]).run(None, feeds)[0],
    )


def test_int8_weights_are_compacted_and_still_fused(zoo_models):
    model = n2nonnx.prune(n2nonnx.load(zoo_models["vgg"]), "random", 0.1, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((128, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 128)
    data = (x[:96], y[:96], x[96:], y[96:])
    compact = deploy(model, quantize="int8", data=data, fallback=False)
    dense = deploy(model, quantize="int8", data=data, fallback=False, storage="dense")

    def int8_weights(proto):
        return {t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT8}

    big = {
        t.name
        for t in dense.model.proto.graph.initializer
        if t.data_type == TensorProto.INT8 and np.prod(t.dims) >= 256
    }
    assert big and not big & int8_weights(compact.model.proto)  # replaced by values + gaps
    assert compact.summary["bytes"]["after"] < dense.summary["bytes"]["after"]
    layers = [layer.name for layer in model.layers]
    assert set(runtime_precision(compact.model.proto, layers).values()) == {None}  # all fused
