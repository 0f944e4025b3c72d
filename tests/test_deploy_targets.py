"""Deployment targets: ORT format and MNN verified against onnxruntime, TensorRT's 2:4 pattern, CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import n2nonnx
from n2nonnx.cli import main
from n2nonnx.deployment import deploy
from n2nonnx.deployment.dead import random_inputs
from n2nonnx.deployment.targets import TARGET_NAMES, get_target
from n2nonnx.deployment.targets.tensorrt import is_2_4, repair_2_4
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import make_session

HAS_MNN = importlib.util.find_spec("MNN") is not None


def pruned(path, density=0.3):
    return n2nonnx.prune(n2nonnx.load(path), "random", density, seed=0)


def saved(model, path):
    n2nonnx.save(model, path)
    return path


def test_registry_names_every_target():
    from n2nonnx.cli import deploy as verb

    assert TARGET_NAMES == verb.TARGET_NAMES == ("onnxruntime", "ort-mobile", "tensorrt", "mnn")
    assert [get_target(n).suffix for n in TARGET_NAMES] == [".onnx", ".ort", ".onnx", ".mnn"]
    with pytest.raises(InvalidArgumentError, match="unknown target"):
        get_target("coreml")


@pytest.mark.parametrize("name", ["vgg", "mlp"])
def test_ort_mobile_writes_ort_and_config_verified(zoo_models, tmp_path, name):
    model = pruned(zoo_models[name])
    result = deploy(model, target="ort-mobile")
    path = result.save(tmp_path / "model.ort")
    config = tmp_path / "model.required_operators.config"
    assert path.read_bytes()[4:8] == b"ORTM" and config.exists()  # flatbuffer identifier
    assert any(line.startswith("ai.onnx;") for line in config.read_text().splitlines())
    assert result.summary["target"]["verification"]["passed"]
    feeds = random_inputs(model, batch=16, rng=np.random.default_rng(2))
    want = make_session(model.proto, ["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_repair_2_4_keeps_the_count_and_makes_the_pattern():
    rng = np.random.default_rng(0)
    for shape, axis in (((16, 24, 3, 3), 1), ((32, 40), 1), ((40, 32), 0), ((8, 10), 1)):
        weight = rng.standard_normal(shape).astype(np.float32)
        weight[rng.random(shape) > 0.3] = 0
        repaired, record = repair_2_4(weight, axis)
        assert repaired.shape == weight.shape and repaired.dtype == weight.dtype
        assert is_2_4(repaired, axis) and (record.moved > 0 or shape == (8, 10))
        rows = np.moveaxis(weight, axis, -1).reshape(-1, shape[axis])
        fixed = np.moveaxis(repaired, axis, -1).reshape(-1, shape[axis])
        channels = shape[axis]
        capacity = 2 * (channels // 4) + min(2, channels % 4)
        overflow = np.maximum(0, np.count_nonzero(rows, axis=1) - capacity)
        # the count is kept exactly except where a row holds more than its 2-in-4 capacity
        assert record.dropped == overflow.sum()
        assert np.count_nonzero(repaired) == np.count_nonzero(weight) - overflow.sum()
        # moved within its row (same output unit and kernel position): the same values
        for before, after, lost in zip(rows, fixed, overflow, strict=True):
            kept = np.sort(np.abs(before[before != 0]))[lost:]
            np.testing.assert_array_equal(np.sort(np.abs(after[after != 0])), kept)
    untouched = np.zeros((4, 8), np.float32)
    untouched[:, [0, 1, 4, 6]] = 1
    same, record = repair_2_4(untouched, 1)
    assert record.moved == 0 and np.array_equal(same, untouched)
    full = np.ones((2, 8), np.float32)  # 8 non-zeros, 2-in-4 capacity 4: 4 dropped per row
    _, record = repair_2_4(full, 1)
    assert record.dropped == 8 and is_2_4(repair_2_4(full, 1)[0], 1)


def test_tensorrt_target_writes_2_4_onnx_with_provider_options(zoo_models, tmp_path):
    model = pruned(zoo_models["vgg"], density=0.4)
    result = deploy(model, target="tensorrt")
    path = result.save(tmp_path / "trt.onnx")
    deployed = n2nonnx.load(path)
    for layer in deployed.layers:
        assert is_2_4(deployed.effective_weight(layer), layer.in_axis), layer.name
    target = result.summary["target"]
    assert target["provider_options"] == {
        "trt_sparsity_enable": True,
        "trt_fp16_enable": True,
        "trt_int8_enable": False,
    }
    assert target["sparsity_2_4"]["moved"] > 0
    assert "trt_sparsity_enable=True" in result.format() and result.verification.passed
    with pytest.raises(InvalidArgumentError, match="takes --quantize none, int8"):
        deploy(model, target="tensorrt", quantize="int4")


@pytest.mark.skipif(not HAS_MNN, reason="MNN is not installed (pip install 'n2nonnx[edge]')")
@pytest.mark.parametrize("name", ["vgg", "mlp", "resnet"])
def test_mnn_target_runs_in_mnn_and_matches_onnxruntime(zoo_models, tmp_path, name):
    import sys

    from n2nonnx.deployment.targets import mnn

    model = pruned(zoo_models[name])
    result = deploy(model, target="mnn")
    assert "MNN.tools" not in sys.modules  # the wrappers that phone home are never imported
    path = result.save(tmp_path / "model.mnn")
    assert result.summary["target"]["verification"]["passed"]
    assert result.summary["target"]["verification"]["rtol"] == 1e-5
    with pytest.raises(InvalidArgumentError, match="takes --quantize none"):
        deploy(model, target="mnn", quantize="int8", data="synthetic:features=4,classes=2")
    feeds = random_inputs(model, batch=8, rng=np.random.default_rng(4))
    want = make_session(model.proto, ["CPUExecutionProvider"]).run(None, feeds)
    inputs = [i.name for i in model.graph_inputs]
    module = mnn.load(path, inputs, [o.name for o in model.graph_outputs])
    got = mnn.run(module, inputs, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5 * np.abs(want[0]).max())


def test_cli_targets_suffix_and_missing_runtime(zoo_models, tmp_path, capsys, monkeypatch):
    source = saved(pruned(zoo_models["mlp"]), tmp_path / "pruned.onnx")
    wrong = tmp_path / "model.onnx"
    assert main(["deploy", str(source), "-o", str(wrong), "--target", "ort-mobile"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "writes a .ort file" in error and not wrong.exists()
    out, report = tmp_path / "model.ort", tmp_path / "deploy.json"
    argv = ["deploy", str(source), "-o", str(out), "--target", "ort-mobile", "--json", str(report)]
    assert main(argv) == 0
    assert out.exists() and (tmp_path / "model.required_operators.config").exists()
    assert json.loads(report.read_text())["target"]["name"] == "ort-mobile"
    capsys.readouterr()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "MNN" else real(name, *a)
    )
    mnn_out = tmp_path / "model.mnn"
    assert main(["deploy", str(source), "-o", str(mnn_out), "--target", "mnn"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "n2nonnx[edge]" in error and not mnn_out.exists()


def test_deploy_default_target_is_recorded(zoo_models):
    result = deploy(pruned(zoo_models["mlp"]))
    assert result.summary["target"]["name"] == "onnxruntime"
    stages = json.loads(
        next(p.value for p in result.model.proto.metadata_props if p.key.startswith("n2nonnx"))
    )
    assert '"target": "onnxruntime"' in json.dumps(stages)
    assert isinstance(result.model.proto, onnx.ModelProto)
