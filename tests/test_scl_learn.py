"""learn_masks end to end: target and free modes, N2NSkip weights, other layer kinds, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import gemm_mlp

import n2nonnx
from converters.pytorch import export
from n2nonnx import zoo
from n2nonnx.data import resolve_data
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.masks import mask_arrays
from n2nonnx.metadata import stages
from n2nonnx.runtime import run
from n2nonnx.scl import TOLERANCE, learn_masks
from n2nonnx.scl.variants import n2nskip_candidates, scl_cell
from n2nonnx.skip import add_n2nskip

torch.set_num_threads(1)
DATA = "synthetic:features=12,classes=3,train=300,test=100"
QUICK = {"batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = zoo.build("mlp", in_features=12, hidden=(32, 32, 16), classes=3)
    return n2nonnx.load(export(net, torch.randn(2, 12)).proto)


@pytest.mark.parametrize("density", [0.1, 0.03])
def test_target_mode_reaches_the_target_within_tolerance(mlp, density):
    result = learn_masks(mlp, DATA, density=density, epochs=4, seed=0, **QUICK)
    total = sum(layer.parameters for layer in mlp.layers)
    assert result.reached
    assert abs(result.learned_density - density) <= TOLERANCE * density
    # the kept-connection trace stays within the tolerance from 3/4 of the search on
    steps = len(result.kept_trace)
    tail = np.array(result.kept_trace[int(0.75 * steps) :]) / total
    assert np.all(np.abs(tail - density) <= TOLERANCE * density)
    assert result.density == round(density * total) / total
    kept = sum(int(np.count_nonzero(m)) for m in mask_arrays(result.model).values())
    assert kept == round(density * total)
    assert max(result.lambdas) > 0 and min(result.lambdas) == 0  # lambda 0 during warm-up


def test_free_mode_density_falls_as_lambda_grows(mlp):
    low = learn_masks(mlp, DATA, scl_lambda=0.05, epochs=2, search_fraction=1.0, seed=0, **QUICK)
    high = learn_masks(mlp, DATA, scl_lambda=1.0, epochs=2, search_fraction=1.0, seed=0, **QUICK)
    assert 0 < high.density < low.density <= 1
    assert set(high.lambdas) == {1.0} and high.reached
    assert high.record["options"]["mode"] == "free"


def test_prune_record_mirrors_the_pruning_stage(mlp):
    result = learn_masks(mlp, DATA, density=0.1, epochs=2, seed=2, **QUICK)
    record = stages(result.model.proto, "prune")[-1]
    for key in (
        "method",
        "density",
        "achieved_density",
        "allocation",
        "seed",
        "exclude",
        "layers",
        "options",
    ):
        assert key in record
    assert record["method"] == "scl" and record["allocation"] == "learned" and record["seed"] == 2
    assert [row["weight"] for row in record["layers"]] == [layer.weight for layer in mlp.layers]
    assert sum(row["kept"] for row in record["layers"]) == round(
        0.1 * sum(layer.parameters for layer in mlp.layers)
    )
    assert record["options"]["search_epochs"] == 1 and record["options"]["epochs"] == 2


def test_skip_weights_are_learned_and_the_split_reported(mlp):
    skipped = add_n2nskip(mlp, density=0.5, skip_share=0.3, seed=0)
    skip_layers = [layer for layer in skipped.layers if layer.is_skip]
    assert skip_layers
    result = learn_masks(skipped, DATA, density=0.1, epochs=4, seed=0, **QUICK)
    learned = {layer.weight: layer for layer in result.layers}
    assert {layer.weight for layer in skip_layers} <= set(learned)
    assert all(learned[layer.weight].is_skip for layer in skip_layers)
    split = result.skip_split
    reference = sum(layer.parameters for layer in skipped.layers if not layer.is_skip)
    assert split["sequential_nonzeros"] + split["skip_nonzeros"] == round(0.1 * reference)
    assert split["skip_nonzeros"] == sum(learned[layer.weight].kept for layer in skip_layers)
    assert stages(result.model.proto, "prune")[-1]["scl"]["skip_nonzeros"] == split["skip_nonzeros"]
    masks = mask_arrays(result.model)
    for layer in skip_layers:
        assert not np.any(result.model.initializer(layer.weight)[masks[layer.weight] == 0])
    x = resolve_data(DATA, input_shape=skipped.graph_inputs[0].shape).x_test.numpy()[:16]
    assert np.all(np.isfinite(run(result.model, {"x": x})[0]))


def test_matmul_and_batchnorm_layers(tmp_path):
    model = n2nonnx.load(gemm_mlp(17))  # Gemm transB 0/1, MatMul (unit axis 1), BatchNorm, Dropout
    data = (
        np.random.default_rng(0).standard_normal((200, 12)).astype(np.float32),
        np.random.default_rng(1).integers(0, 4, 200),
    )
    result = learn_masks(model, data, density=0.3, epochs=2, seed=0, batch_size=20)
    assert result.reached
    assert {layer.weight for layer in result.layers} == {"w1", "w2", "wp", "w3"}
    x = data[0][:8]
    expected = run(result.model, {"x": x})[0]
    module = n2nonnx.backend.OnnxModule(result.model).eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            module(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5
        )


def test_unreachable_target_warns_with_the_density_reached(mlp):
    with pytest.warns(
        UserWarning, match=r"did not reach the target density 0.05 .* it reached 0\.\d+"
    ):
        result = learn_masks(mlp, DATA, density=0.05, epochs=2, seed=0, max_lambda=0.0, **QUICK)
    assert not result.reached and result.learned_density > 0.5
    total = sum(layer.parameters for layer in mlp.layers)
    assert result.density == round(0.05 * total) / total  # the top-k freeze still meets it
    assert stages(result.model.proto, "prune")[-1]["scl"]["reached"] is False


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"data": None, "density": 0.1}, DataError, "needs data"),
        ({"scl_lambda": -0.1}, InvalidArgumentError, "scl_lambda=-0.1 must be a number >= 0"),
        ({"scl_lambda": float("nan")}, InvalidArgumentError, "scl_lambda"),
        ({}, InvalidArgumentError, "needs density= .* or scl_lambda="),
        ({"density": 0.1, "scl_lambda": 0.5}, InvalidArgumentError, "not both"),
        ({"density": 1.5}, InvalidArgumentError, "density must be in"),
        ({"density": 1e-7}, InvalidArgumentError, "keeps no connection"),
        (
            {"density": 1.0, "exclude": ["/0/Gemm"]},
            InvalidArgumentError,
            "learned weights hold only",
        ),
        ({"density": 0.1, "search_fraction": 0.0}, InvalidArgumentError, "search_fraction"),
        ({"density": 0.1, "mask_init": -1.0}, InvalidArgumentError, "mask_init"),
        ({"density": 0.1, "mask_lr": 0}, InvalidArgumentError, "mask_lr"),
        ({"density": 0.1, "max_lambda": -1}, InvalidArgumentError, "max_lambda"),
        ({"density": 0.1, "normalisation": "l1"}, InvalidArgumentError, "normalisation='l1'"),
        (
            {"density": 0.1, "warmup": 0.5, "reach": 0.4},
            InvalidArgumentError,
            "0 <= warmup < reach <= 1",
        ),
        ({"density": 0.1, "epochs": 0}, InvalidArgumentError, "epochs"),
        ({"density": 0.1, "optimiser": "adam"}, InvalidArgumentError, "unknown training option"),
        ({"density": 0.1, "exclude": ["nothing*"]}, InvalidArgumentError, "matches no layer"),
    ],
)
def test_bad_input_is_refused_before_any_work(mlp, options, error, match):
    options = {"data": DATA, **options}
    data = options.pop("data")
    with pytest.raises(error, match=match):
        learn_masks(mlp, data, **options)


def test_n2nskip_candidates_give_scl_every_connection(mlp):
    candidates = n2nskip_candidates(mlp, density=0.2, skip_share=0.5, seed=3)
    skips = [layer for layer in candidates.layers if layer.is_skip]
    assert skips
    for layer in candidates.layers:
        value = candidates.initializer(layer.weight)
        if layer.is_skip:
            assert np.count_nonzero(value) == value.size
        else:
            np.testing.assert_array_equal(value, mlp.initializer(layer.weight))
    result = scl_cell(mlp, DATA, density=0.1, skip_share=0.5, recipe={"epochs": 2, **QUICK}, seed=3)
    reference = sum(layer.parameters for layer in mlp.layers)
    assert sum(result.skip_split.values()) == round(0.1 * reference) and len(result.history) == 2


def test_comparison_example_quick(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "scl_comparison.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=script.parents[1],
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split("|")[1].strip(): line
        for line in done.stdout.splitlines()
        if line.startswith("| ")
    }
    assert {"SCL", "N2NSkip-SCL", "SNIP", "RP"} <= set(rows)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4
    again = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=script.parents[1],
    )
    assert (
        again.returncode == 0 and "density" not in again.stdout.split("| method")[0]
    )  # resumed, nothing rerun
