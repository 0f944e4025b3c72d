"""Connectivity-guided N2NSkip placement: the same budget, repairs that must happen, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import nonzeros, random_masks

import n2nonnx
from n2nonnx import backend, masks, metadata
from n2nonnx.cli import main
from n2nonnx.connectivity import build_unit_graph
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import run
from n2nonnx.skip import add_n2nskip

ROOT = Path(__file__).resolve().parents[1]
INPUTS = {"mlp": (5, 40), "vgg": (5, 3, 16, 16), "resnet": (5, 3, 16, 16)}


def dead_units(model: n2nonnx.Model) -> dict[str, int]:
    return build_unit_graph(model).dead_units()


def record(model: n2nonnx.Model) -> dict:
    return metadata.stages(model.proto, "n2nskip")[-1]


@pytest.mark.parametrize("name", ["mlp", "vgg", "resnet"])
@pytest.mark.parametrize("sampling", ["uniform", "block", "channel"])
def test_same_budget_as_random_placement_and_no_more_dead_units(zoo_models, name, sampling):
    pruned = random_masks(n2nonnx.load(zoo_models[name]), 0.08, seed=2)
    placed = add_n2nskip(pruned, sampling=sampling, seed=1)
    repaired = add_n2nskip(pruned, sampling=sampling, placement="connectivity", seed=1)
    assert nonzeros(repaired) == nonzeros(placed) == nonzeros(pruned)
    assert (
        nonzeros(repaired, skip=True)
        == nonzeros(placed, skip=True)
        == record(placed)["skip_nonzeros"]
    )
    sequential = {layer.weight for layer in pruned.layers}
    for weight in sequential:  # placement changes only the skips
        np.testing.assert_array_equal(repaired.mask(weight), placed.mask(weight))
    assert sum(dead_units(repaired).values()) <= sum(dead_units(placed).values())
    info = record(repaired)
    assert info["placement"] == "connectivity" and info["sampling"] == sampling
    assert sum(p["nonzeros"] for p in info["pairs"]) == info["skip_nonzeros"]
    repairs = info["repairs"]
    assert repairs["dead_after"] <= repairs["dead_before"]
    assert sum(dead_units(repaired).values()) <= repairs["dead_after"]
    from_input = sum(p["nonzeros"] for p in info["pairs"] if p["source"].startswith("input:"))
    # the rest of the budget goes out of the inputs only up to their dense degree
    kernel = 9 if sampling == "channel" and name != "mlp" else 1
    assert from_input <= repairs["nonzeros"] + kernel * repairs["input_allowance"]
    graph = build_unit_graph(repaired)
    dense_graph = build_unit_graph(pruned, reference=True)
    degree = int(graph.flow[graph.input_nodes].nnz)
    if repairs["input_allowance"] and from_input > repairs["nonzeros"]:
        assert degree <= int(dense_graph.flow[dense_graph.input_nodes].nnz)
    assert record(placed)["repairs"] is None


def test_dense_model_with_a_density(zoo_models):
    model = n2nonnx.load(zoo_models["vgg"])
    dense = sum(layer.parameters for layer in model.layers)
    out = add_n2nskip(model, density=0.05, placement="connectivity", sampling="uniform", seed=0)
    assert nonzeros(out) == round(0.05 * dense)
    assert nonzeros(out, skip=True) == round(0.5 * round(0.05 * dense))


@pytest.fixture(scope="module")
def broken_mlp(tmp_path_factory) -> n2nonnx.Model:
    """40-32-32-32-10 where fc2 units 0-15 have no inputs and fc2 units 16-23 no outputs."""
    from converters.pytorch import export
    from n2nonnx.zoo import build

    torch.manual_seed(0)
    module = build("mlp", in_features=40, hidden=(32, 32, 32), classes=10)
    path = tmp_path_factory.mktemp("broken") / "mlp.onnx"
    model = n2nonnx.load(export(module, torch.randn(2, 40), path).path)
    fc1, fc2, fc3, fc4 = model.layers
    rng = np.random.default_rng(0)
    keep = {layer.weight: np.ones(layer.weight_shape, np.float32) for layer in model.layers}
    first = (rng.random(fc1.weight_shape) < 0.3).astype(np.float32)
    first[np.arange(32), rng.integers(0, 40, 32)] = 1.0  # every fc1 unit has an input
    keep[fc1.weight] = first
    second = keep[fc2.weight]
    index = [slice(None)] * 2
    index[fc2.unit_axis] = slice(0, 16)
    second[tuple(index)] = 0.0
    third = keep[fc3.weight]
    index = [slice(None)] * 2
    index[fc3.in_axis] = slice(16, 24)
    third[tuple(index)] = 0.0
    return masks.apply_masks(model, keep)


def test_connectivity_repairs_what_random_placement_leaves(broken_mlp):
    """20 skip weights into fc2 and 20 out of it: random leaves units dead, repairs do not."""
    model = broken_mlp
    _, fc2, fc3, fc4 = (layer.name for layer in model.layers)
    before = dead_units(model)
    assert before[fc2] == 24  # 16 without an input path, 8 without an output path
    kept = nonzeros(model)
    dense = sum(layer.parameters for layer in model.layers)
    options = {
        "density": (kept + 40) / dense,
        "skip_share": 40 / (kept + 40),
        "pairs": [("x", fc2), (fc2, fc4)],
        "spread": "equal",
    }
    for sampling in ("uniform", "block", "channel"):
        for seed in range(3):
            placed = add_n2nskip(model, sampling=sampling, seed=seed, **options)
            repaired = add_n2nskip(
                model, sampling=sampling, placement="connectivity", seed=seed, **options
            )
            assert nonzeros(placed) == nonzeros(repaired) == kept + 40
            assert dead_units(repaired)[fc2] == 0
            assert dead_units(placed)[fc2] > 0, (sampling, seed)
            repairs = record(repaired)["repairs"]
            assert (repairs["input_paths"], repairs["output_paths"]) == (16, 8)
            assert repairs["dead_before"] == sum(before.values())


def test_repairs_stop_at_the_budget(broken_mlp):
    model = broken_mlp
    fc2 = model.layers[1].name
    kept = nonzeros(model)
    dense = sum(layer.parameters for layer in model.layers)
    out = add_n2nskip(
        model,
        density=(kept + 5) / dense,
        skip_share=5 / (kept + 5),
        pairs=[("x", fc2)],
        placement="connectivity",
        sampling="uniform",
    )
    repairs = record(out)["repairs"]
    assert nonzeros(out) == kept + 5
    assert repairs["input_paths"] == 5 and repairs["skipped"] == 11
    assert dead_units(out)[fc2] == 24 - 5


def test_same_seed_same_bytes(zoo_models, tmp_path):
    model = random_masks(n2nonnx.load(zoo_models["resnet"]), 0.05)
    files = []
    for position, seed in enumerate((4, 4, 5)):
        out = add_n2nskip(model, seed=seed, placement="connectivity", sampling="uniform")
        files.append(n2nonnx.save(out, tmp_path / f"{position}.onnx").read_bytes())
    assert files[0] == files[1] and files[0] != files[2]


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_onnxruntime_agrees_with_the_backend(zoo_models, name):
    model = random_masks(n2nonnx.load(zoo_models[name]), 0.05)
    out = add_n2nskip(model, placement="connectivity", sampling="uniform", seed=0)
    x = np.random.default_rng(0).standard_normal(INPUTS[name]).astype(np.float32)
    module = backend.OnnxModule(out).eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    expected = run(out, x)[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_bad_placement(zoo_models):
    model = random_masks(n2nonnx.load(zoo_models["mlp"]), 0.2)
    with pytest.raises(InvalidArgumentError, match="placement"):
        add_n2nskip(model, placement="greedy")


def test_cli_placement(zoo_models, tmp_path, capsys):
    out = tmp_path / "skip.onnx"
    argv = ["skip", str(zoo_models["vgg"]), "-o", str(out), "--density", "0.05"]
    assert main([*argv, "--placement", "connectivity", "--sampling", "uniform"]) == 0
    assert record(n2nonnx.load(out))["placement"] == "connectivity"
    pruned = tmp_path / "pruned.onnx"
    argv = ["prune", str(zoo_models["vgg"]), "-o", str(pruned), "--method", "random"]
    assert main([*argv, "--density", "0.05", "--n2nskip", "--placement", "connectivity"]) == 0
    model = n2nonnx.load(pruned)
    assert record(model)["placement"] == "connectivity"
    dense = sum(layer.parameters for layer in model.layers if not layer.is_skip)
    assert nonzeros(model) == round(0.05 * dense)
    capsys.readouterr()
    assert main(["skip", str(zoo_models["vgg"]), "-o", str(out), "--placement", "best"]) == 2
    assert "--placement" in capsys.readouterr().err


def test_example_quick():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "skip_placement.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in ("RP", "rand-uniform", "rand-block", "conn-uniform")
    }
    assert set(rows) == {"RP", "rand-uniform", "rand-block", "conn-uniform"}
    assert len({rows[name][1] for name in rows}) == 1  # one budget
    assert int(rows["conn-uniform"][2]) <= int(rows["rand-uniform"][2])  # dead units
    assert int(rows["conn-uniform"][3]) == 1  # one component
