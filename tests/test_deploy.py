"""deploy(): exact round trips against onnxruntime on the input model, compact storage, fp16, int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import n2nonnx
from n2nonnx.deployment import deploy
from n2nonnx.deployment.dead import random_inputs
from n2nonnx.deployment.storage import compact_storage, encode_gaps, unfolded_expansions
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.runtime import make_session
from n2nonnx.skip import add_n2nskip

EXPANSION_OPS = {"ScatterND", "CumSum", "ConstantOfShape"}


def pruned(path, density=0.05, skips=False):
    model = n2nonnx.prune(n2nonnx.load(path), "random", density, seed=0)
    return add_n2nskip(model, skip_share=0.5, seed=0) if skips else model


def outputs(proto, feeds):
    return make_session(proto, ["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize(
    ("name", "skips"),
    [
        ("mlp", False),
        ("vgg", False),
        ("resnet", False),
        ("densenet", False),
        ("mobilenet", False),
        ("mlp", True),
    ],
)
def test_round_trip_matches_input_model(zoo_models, tmp_path, name, skips):
    model = pruned(zoo_models[name], skips=skips)
    result = deploy(model, timing=False)  # the choice is tested in test_deploy_align.py
    path = result.save(tmp_path / "deployed.onnx")
    feeds = random_inputs(model, batch=16, rng=np.random.default_rng(7))
    expected, got = outputs(model.proto, feeds)[0], outputs(onnx.load(str(path)), feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    summary = result.summary
    assert result.verification.passed and result.verification.relative <= 1e-5
    assert summary["units"]["removed"] > 0  # 5% random pruning leaves dead units in every zoo model
    assert summary["weights"]["nonzero_after"] <= summary["weights"]["nonzero_before"]
    assert summary["bytes"]["after"] < 0.7 * summary["bytes"]["before"]
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert (
        "Mul" not in ops or name == "mobilenet"
    )  # mask Muls folded (mobilenet has HardSwish only)
    if skips:
        assert summary["nodes"]["after_fold"] < summary["nodes"]["before"]


def test_compact_expansion_is_folded_by_onnxruntime(zoo_models, tmp_path):
    import onnxruntime as ort

    model = n2nonnx.masks.fold_masks(pruned(zoo_models["vgg"]))
    proto, records = compact_storage(model.proto)
    assert records and {n.op_type for n in proto.graph.node} >= {"ScatterND", "CumSum"}
    assert unfolded_expansions(proto, records) == []
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert not EXPANSION_OPS & {node.op_type for node in optimized.graph.node}
    feeds = random_inputs(model, batch=4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(outputs(proto, feeds)[0], outputs(model.proto, feeds)[0])


def test_gap_escapes_rebuild_exact_positions():
    positions = np.array([0, 3, 300, 301, 1000, 70000])
    values = np.arange(1, 7, dtype=np.float32)
    gaps, stored = encode_gaps(positions, values)
    assert gaps.dtype == np.uint8 and len(gaps) > len(positions)
    rebuilt = np.cumsum(gaps.astype(np.int64))
    dense = np.zeros(70001, np.float32)
    dense[rebuilt] = stored
    expected = np.zeros(70001, np.float32)
    expected[positions] = values
    np.testing.assert_array_equal(dense, expected)


def test_fp16_values_and_dense_storage(zoo_models):
    model = pruned(zoo_models["vgg"])
    half = deploy(model, weights_fp16=True)
    full = deploy(model)
    dense = deploy(model, storage="dense")
    assert half.verification.mode == "fp16" and half.verification.relative < 1e-2
    assert (
        half.summary["bytes"]["after"]
        < full.summary["bytes"]["after"]
        < dense.summary["bytes"]["after"]
    )
    assert not {n.op_type for n in dense.model.proto.graph.node} & EXPANSION_OPS


def test_model_without_masks_deploys(zoo_models):
    model = n2nonnx.load(zoo_models["mlp"])
    result = deploy(model)
    assert result.verification.passed and result.summary["units"]["removed"] == 0


def test_int8_reports_accuracy_and_agreement(zoo_models):
    model = pruned(zoo_models["mlp"], density=0.2)
    result = deploy(model, quantize="int8", data="synthetic:features=40,classes=10", fallback=False)
    assert result.verification.mode == "int8" and result.verification.top1_agreement >= 0.9
    assert {"before", "after"} <= set(result.summary["accuracy"])
    assert any(n.op_type == "DequantizeLinear" for n in result.model.proto.graph.node)


def test_bad_arguments_fail_before_work(zoo_models):
    model = pruned(zoo_models["mlp"])
    with pytest.raises(InvalidArgumentError, match="unknown quantization"):
        deploy(model, quantize="int2")
    with pytest.raises(InvalidArgumentError, match="needs calibration data"):
        deploy(model, quantize="int8")
    with pytest.raises(InvalidArgumentError, match="unknown storage"):
        deploy(model, storage="sparse")
    with pytest.raises(DataError, match="expects"):
        deploy(model, quantize="int8", data="synthetic:features=12,classes=3")


def test_disagreement_beyond_tolerance_is_an_error(zoo_models, tmp_path):
    from n2nonnx.deployment.verify import VerificationError

    model = pruned(zoo_models["vgg"])
    with pytest.raises(VerificationError, match="disagrees"):
        deploy(model, weights_fp16=True, rtol=1e-12)


def test_benchmark_quick_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "benchmark_deploy.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| mlp | 5% |" in done.stdout and "int8" in done.stdout


def test_deploy_without_timing_writes_the_same_bytes(zoo_models):
    model = pruned(zoo_models["vgg"])
    first, second = deploy(model, timing=False), deploy(model, timing=False)
    assert first.model.proto.SerializeToString() == second.model.proto.SerializeToString()
