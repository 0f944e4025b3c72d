"""Quantization at deployment: layers kept fp32 really run fp32 in onnxruntime; int4 MatMulNBits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import n2nonnx
from n2nonnx.deployment import deploy
from n2nonnx.deployment.dead import random_inputs
from n2nonnx.deployment.quantize import FP32_LAYER_OPS, INT_LAYER_OPS, runtime_precision
from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.runtime import make_session


def pruned(path, density=0.3):
    return n2nonnx.prune(n2nonnx.load(path), "random", density, seed=0)


def image_data(shape, count=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *shape)).astype(np.float32)
    y = rng.integers(0, 10, count)
    return x[:192], y[:192], x[192:], y[192:]


def optimized_ops(proto, path):
    """The op types of the model onnxruntime writes after its optimisations (level all, CPU)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_layers_kept_fp32_run_fp32_in_onnxruntime(zoo_models, tmp_path):
    model = pruned(zoo_models["vgg"])
    convs = [layer.name for layer in model.layers if layer.op == "Conv"]
    gemms = [layer.name for layer in model.layers if layer.op == "Gemm"]
    keep = [convs[2], gemms[0]]  # a conv behind a MaxPool, a Gemm behind a Flatten
    data = image_data((3, 16, 16))
    all_int8 = deploy(model, quantize="int8", data=data, fallback=False, storage="dense")
    kept = deploy(model, quantize="int8", data=data, fallback=False, keep_fp32=keep)
    # onnxruntime's own optimised model: every layer fused to an integer kernel without
    # exclusion; with it, exactly the kept ones are fp32 Conv / Gemm, the others still fused
    before = optimized_ops(all_int8.model.proto, tmp_path / "all.onnx")
    after = optimized_ops(kept.model.proto, tmp_path / "kept.onnx")
    assert not FP32_LAYER_OPS & set(before)
    assert sum(op in FP32_LAYER_OPS for op in after) == len(keep)
    assert sum(op in INT_LAYER_OPS for op in after) == sum(op in INT_LAYER_OPS for op in before) - 2
    precision = runtime_precision(kept.model.proto, [la.name for la in model.layers])
    assert {name for name, op in precision.items() if op in FP32_LAYER_OPS} == set(keep)
    assert kept.quantization.kept_fp32 == keep and set(kept.quantization.runtime_fp32) == set(keep)
    assert kept.verification.passed and kept.summary["accuracy"]["samples"] == 64
    assert "fp32 in onnxruntime's optimised model: checked" in kept.format()


def test_keep_fp32_names_layers_only(zoo_models):
    model = pruned(zoo_models["mlp"])
    data = "synthetic:features=40,classes=10"
    with pytest.raises(InvalidArgumentError, match="not Conv / Gemm / MatMul layers"):
        deploy(model, quantize="int8", data=data, fallback=False, keep_fp32=["nope"])
    with pytest.raises(InvalidArgumentError, match="needs --quantize"):
        deploy(model, keep_fp32=["x"])


def test_int4_matmulnbits_agrees_within_tolerance(zoo_models):
    model = pruned(zoo_models["mlp"], density=0.5)
    result = deploy(model, quantize="int4", data="synthetic:features=40,classes=10")
    ops = {node.op_type for node in result.model.proto.graph.node}
    assert "MatMulNBits" in ops and "Gemm" not in ops
    layers = [la.name for la in model.layers]
    assert sorted(result.quantization.layers) == sorted(layers)
    # deploy enforces 90% top-1 agreement (TOLERANCES["int4"]); this test also holds the
    # largest output difference to 15% of the output scale (4-bit blocks of 32, symmetric)
    assert result.verification.mode == "int4" and result.verification.min_agreement == 0.9
    assert result.verification.passed and result.verification.relative <= 0.15
    feeds = random_inputs(model, batch=64, rng=np.random.default_rng(3))
    want = make_session(model.proto, ["CPUExecutionProvider"]).run(None, feeds)[0]
    got = make_session(result.model.proto, ["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(got - want).max() <= 0.15 * np.abs(want).max()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9
    assert {"before", "after"} <= set(result.summary["accuracy"])
    assert any("4-bit packed" in why for why in result.summary["uncompacted"].values())


def test_int4_keeps_named_layers_and_checks_onnxruntime(zoo_models, monkeypatch):
    model = pruned(zoo_models["mlp"], density=0.5)
    first = model.layers[0].name
    result = deploy(model, quantize="int4", keep_fp32=[first])
    assert first not in result.quantization.layers and len(result.quantization.layers) == 2
    monkeypatch.setattr(ort, "__version__", "1.16.3")
    with pytest.raises(UnsupportedOpError, match=r"needs onnxruntime >= 1\.18"):
        deploy(model, quantize="int4")
