"""Connectivity repair: no kept weight on a dead path, the count kept, on every kind of model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from n2nonnx import add_n2nskip, io, prune, runtime, train, zoo
from n2nonnx.backend import OnnxModule
from n2nonnx.cli import main
from n2nonnx.cli.options import REPAIR_HELP
from n2nonnx.connectivity import build_unit_graph, repair_dead_weights
from n2nonnx.connectivity.repair import dead_weights
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.masks import mask_arrays
from n2nonnx.metadata import stages

VGG1D = {"widths": [8, 8, 16, 16], "pool_after": [1, 3]}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vgg1d(tmp_path_factory) -> Path:
    return zoo.export_builtin("vgg1d", tmp_path_factory.mktemp("vgg1d") / "vgg1d.onnx", 0, VGG1D)


def liveness(model, weights=None) -> tuple[int, int, int]:
    """(dead kept entries, kept entries, dead units), from the layer view alone.

    An entry is live when one of its source units is reachable from an input and its
    target unit reaches an output (skip entries target the layer they add into). Entries
    are counted in ``weights`` only (default: every layer).
    """
    graph = build_unit_graph(model)
    blocks = {block.name: block for block in graph.blocks}
    skips = {layer.name for layer in model.layers if layer.is_skip}
    entries = []
    for layer in model.layers:
        assert layer.groups == 1
        weight = np.moveaxis(
            model.effective_weight(layer), (layer.unit_axis, layer.in_axis), (0, 1)
        )
        target = blocks[layer.merges_into if layer.is_skip else layer.name].start
        edges = [e for e in layer.fed_by if e.source in blocks and e.source not in skips]
        for unit, in_unit in zip(*np.nonzero(weight)[:2], strict=True):
            sources = []
            for edge in edges:
                block = blocks[edge.source]
                if edge.unit_map is None:
                    sources += range(block.start, block.stop)
                elif edge.unit_map[in_unit] >= 0:
                    sources.append(block.start + int(edge.unit_map[in_unit]))
            entries.append(
                (sources, target + int(unit), weights is None or layer.weight in weights)
            )
    after, before = defaultdict(set), defaultdict(set)
    for sources, target, _ in entries:
        for source in sources:
            after[source].add(target)
            before[target].add(source)
    forward = _closure(graph.input_nodes, after)
    backward = _closure(graph.output_nodes, before)
    counted = [(sources, t) for sources, t, count in entries if count]
    dead = sum(
        1 for sources, t in counted if not (t in backward and any(s in forward for s in sources))
    )
    alive = forward & backward
    dead_units = sum(
        block.size - sum(node in alive for node in range(block.start, block.stop))
        for block in graph.blocks
        if not block.is_input
    )
    assert dead_units == sum(graph.dead_units().values())  # the checker agrees with the graph
    return dead, len(counted), dead_units


def _closure(starts, links) -> set[int]:
    seen = {int(s) for s in starts}
    frontier = list(seen)
    while frontier:
        frontier = [n for node in frontier for n in links[node] if n not in seen]
        seen.update(frontier)
    return seen


def _models(name: str, zoo_models, vgg1d: Path):
    """(pruned model without repair) for each case of the main test."""
    if name == "mlp":
        return prune(io.load(zoo_models["mlp"]), "snip", 0.05, data="mnist1d", seed=0)
    if name == "vgg1d":
        return prune(io.load(vgg1d), "random", 0.05, seed=0)
    if name == "resnet":
        return prune(io.load(zoo_models["resnet"]), "random", 0.03, seed=0)
    pruned = prune(io.load(zoo_models["mlp"]), "random", 0.05, seed=0)
    return add_n2nskip(pruned, skip_share=0.5, seed=0)


@pytest.mark.parametrize("name", ["mlp", "vgg1d", "resnet", "n2nskip"])
def test_repair_leaves_no_kept_weight_on_a_dead_path(name, zoo_models, vgg1d):
    pruned = _models(name, zoo_models, vgg1d)
    dead, kept, dead_units = liveness(pruned)
    assert dead > 0, "the case must have dead weights to repair"
    repaired = repair_dead_weights(pruned, seed=0)
    dead_after, kept_after, dead_units_after = liveness(repaired)
    assert dead_after == 0
    assert kept_after == kept
    assert dead_units_after <= dead_units
    record = stages(repaired.proto, "repair")[-1]
    assert record["dead_weights_before"] == dead == sum(dead_weights(pruned).values())
    assert record["dead_weights_after"] == 0 and record["converged"]
    assert record["nonzeros"] == kept
    assert record["dead_units_total"] == {"before": dead_units, "after": dead_units_after}
    assert sum(r["kept"] for r in record["layers"]) == kept
    assert all(r["kept"] == r["before"] - r["removed"] + r["added"] for r in record["layers"])
    assert set(mask_arrays(repaired)) == set(mask_arrays(pruned))
    if name == "n2nskip":  # skip weights are repaired too (at random)
        skip_weights = {layer.weight for layer in repaired.layers if layer.is_skip}
        rows = [r for r in record["layers"] if r["weight"] in skip_weights]
        assert rows and all(r["by"] == "random" for r in rows)
        assert any(r["removed"] for r in rows)


def test_prune_repair_regrows_by_the_scores_with_the_dense_values(zoo_models):
    dense = io.load(zoo_models["mlp"])
    plain = prune(dense, "magnitude", 0.05, seed=0)
    repaired = prune(dense, "magnitude", 0.05, seed=0, repair=True)
    assert [r["stage"] for r in repaired.metadata["stages"]][-2:] == ["prune", "repair"]
    assert stages(repaired.proto, "prune")[-1]["repair"] is True
    assert liveness(repaired)[:2] == (0, liveness(plain)[1])
    record = stages(repaired.proto, "repair")[-1]
    assert all(r["by"] == "scores" for r in record["layers"])
    moved = 0
    for layer in dense.layers:
        values = dense.initializer(layer.weight)
        kept = repaired.mask(layer.weight) > 0
        np.testing.assert_array_equal(repaired.effective_weight(layer)[kept], values[kept])
        added = kept & ~(plain.mask(layer.weight) > 0)
        if added.any():  # the criterion's next-best: larger than most pruned weights
            free = np.abs(values[~kept])
            assert np.abs(values[added]).mean() > np.median(free)
            moved += int(added.sum())
    assert moved > 0


def test_prune_repair_leaves_excluded_layers_alone(zoo_models):
    dense = io.load(zoo_models["mlp"])
    last = dense.layers[-1]
    repaired = prune(dense, "random", 0.05, seed=0, exclude=[last.name], repair=True)
    assert repaired.mask(last.weight) is None
    np.testing.assert_array_equal(repaired.initializer(last.weight), dense.initializer(last.weight))
    record = stages(repaired.proto, "repair")[-1]
    assert last.weight not in {r["weight"] for r in record["layers"]}
    assert liveness(repaired, set(mask_arrays(repaired)))[0] == 0


def test_repair_is_deterministic_for_a_seed(vgg1d):
    pruned = add_n2nskip(prune(io.load(vgg1d), "random", 0.05, seed=0), skip_share=0.5, seed=0)
    first = repair_dead_weights(pruned, seed=3).proto.SerializeToString()
    assert repair_dead_weights(pruned, seed=3).proto.SerializeToString() == first
    other = repair_dead_weights(pruned, seed=4)
    assert other.proto.SerializeToString() != first
    assert liveness(other)[0] == 0


def test_collapsed_layers_are_bridged(vgg1d):
    dense = io.load(vgg1d)
    rng = np.random.default_rng(0)
    masks = {}
    for position, layer in enumerate(dense.layers):  # the last two layers pruned to nothing
        keep = rng.random(layer.weight_shape) < 0.2
        masks[layer.weight] = keep if position < len(dense.layers) - 2 else np.zeros_like(keep)
    pruned = prune(dense, "masks", masks=masks)
    dead, kept, _ = liveness(pruned)
    assert dead == kept  # no input-output path at all
    repaired = repair_dead_weights(pruned, seed=0)
    assert liveness(repaired)[:2] == (0, kept)
    last_two = {layer.weight for layer in dense.layers[-2:]}
    assert all(np.count_nonzero(repaired.effective_weight(w)) > 0 for w in last_two)


def test_no_room_keeps_the_count_and_says_so(vgg1d, caplog):
    pruned = prune(io.load(vgg1d), "random", 0.05, seed=0)
    nowhere = {w: np.zeros(m.shape, dtype=bool) for w, m in mask_arrays(pruned).items()}
    with caplog.at_level(logging.WARNING):
        repaired = repair_dead_weights(pruned, seed=0, allowed=nowhere)
    record = stages(repaired.proto, "repair")[-1]
    assert not record["converged"]
    assert record["dead_weights_after"] == record["dead_weights_before"] > 0
    assert "no room" in caplog.text
    for weight, mask in mask_arrays(pruned).items():
        np.testing.assert_array_equal(mask_arrays(repaired)[weight], mask)


def test_bad_input_is_refused(zoo_models):
    dense = io.load(zoo_models["mlp"])
    with pytest.raises(InvalidArgumentError, match="no masked weights"):
        repair_dead_weights(dense)
    pruned = prune(dense, "random", 0.1, seed=0)
    weight = dense.layers[0].weight
    with pytest.raises(InvalidArgumentError, match="shape"):
        repair_dead_weights(pruned, scores={weight: np.zeros(3)})
    nan = np.full(dense.initializer(weight).shape, np.nan)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        repair_dead_weights(pruned, scores={weight: nan})
    with pytest.raises(InvalidArgumentError, match="max_rounds"):
        repair_dead_weights(pruned, max_rounds=0)
    with pytest.raises(InvalidArgumentError, match="'typo' are not masked weights.*choose from"):
        repair_dead_weights(pruned, weights=[weight, "typo"])


def test_repaired_model_runs_in_onnxruntime_and_trains(tmp_path):
    dense = io.load(zoo.export_builtin("mlp", tmp_path / "mlp.onnx", 0, {"hidden": [64, 64]}))
    model = prune(dense, "snip", 0.04, allocation="erk", data="mnist1d", rescale=True, repair=True)
    model = repair_dead_weights(add_n2nskip(model, density=0.05, skip_share=0.2, seed=0), seed=0)
    x = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32)
    expected = OnnxModule(model.proto).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(runtime.run(model, x)[0], expected, rtol=1e-5, atol=1e-6)
    result = train(model, "mnist1d", epochs=3, lr=3e-3, batch_size=128)
    losses = result.history.column("train_loss")
    assert losses[-1] < losses[0]
    assert sum(dead_weights(result.model).values()) == 0
    kept = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in model.layers)
    trained = result.model
    assert sum(int(np.count_nonzero(trained.effective_weight(la))) for la in trained.layers) == kept


def test_cli_flags(tmp_path, zoo_models, capsys):
    source = str(zoo_models["mlp"])
    out = tmp_path / "p.onnx"
    args = ["prune", source, "-o", str(out), "--method", "snip", "--density", "0.05"]
    assert main([*args, "--data", "mnist1d", "--repair", "--no-progress"]) == 0
    assert "repair: moved" in capsys.readouterr().out
    assert [r["stage"] for r in io.load(out).metadata["stages"]][-2:] == ["prune", "repair"]
    both = tmp_path / "s.onnx"
    skip = ["prune", source, "-o", str(both), "--method", "random", "--density", "0.05"]
    assert main([*skip, "--n2nskip", "--repair"]) == 0
    assert [r["stage"] for r in io.load(both).metadata["stages"]][-3:] == [
        "repair",
        "n2nskip",
        "repair",
    ]
    plain = tmp_path / "plain.onnx"
    assert main(["prune", source, "-o", str(plain), "--method", "random", "--density", "0.1"]) == 0
    skipped = tmp_path / "k.onnx"
    assert main(["skip", str(plain), "-o", str(skipped), "--repair", "--seed", "1"]) == 0
    record = stages(io.load(skipped).proto, "repair")[-1]
    assert record["seed"] == 1 and liveness(io.load(skipped))[0] == 0
    capsys.readouterr()
    bad = ["prune", source, "-o", str(tmp_path / "x.onnx"), "--method", "snacs", "--repair"]
    assert main([*bad, "--data", "mnist1d"]) == 2
    assert "--repair" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    scl = ["run", "--method", "scl", "--repair", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(scl) == 2
    assert not (tmp_path / "r").exists()


def test_run_repair_records_both_passes(tmp_path, zoo_models):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 40)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    out = tmp_path / "job"
    args = ["run", str(zoo_models["mlp"]), "--data", str(data), "--method", "random"]
    args += ["--epochs", "1", "--out", str(out), "--no-progress", "--no-baselines"]
    assert main([*args, "--no-deploy", "--no-connectivity", "--repair"]) == 0
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["config"]["repair"] is True
    assert len(numbers["repair"]) == 2
    assert numbers["repair"][-1]["dead_weights_after"] == 0
    report = (out / "report.md").read_text()
    assert report.count("| connectivity repair |") == 2 and "-> 0 |" in report


@pytest.mark.parametrize("verb", ["prune", "skip", "run"])
def test_repair_means_the_same_on_every_verb(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert "".join(REPAIR_HELP.split()) in "".join(capsys.readouterr().out.split())


def test_repair_check_example_quick():
    script = Path(__file__).resolve().parents[1] / "examples" / "repair_check.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 3
    assert all("-> 0 " in line for line in rows)  # no dead weight left after repair
