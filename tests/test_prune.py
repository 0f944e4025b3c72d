"""Pruning at initialization: exact accounting, criteria against hand-written torch, masks in the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import n2nonnx
from converters.pytorch import export
from n2nonnx.cli import main
from n2nonnx.data.dataset import TrainTestData
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.masks import mask_arrays
from n2nonnx.pruning import prune, prune_table
from n2nonnx.pruning.criteria import ScoringContext, get_criterion
from n2nonnx.runtime import run

METHODS = ["random", "expander", "magnitude", "snip", "grasp", "synflow"]


def small_mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5)
    )


def small_cnn(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


def toy_data(sample_shape, count=40, classes=5, seed=0) -> TrainTestData:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, *sample_shape, generator=generator)
    y = torch.arange(count) % classes
    return TrainTestData(x, y, x[:10], y[:10], name="toy")


@pytest.fixture(scope="module")
def mlp_model():
    return n2nonnx.load(export(small_mlp(), torch.randn(2, 20)).proto)


@pytest.fixture(scope="module")
def cnn_model():
    return n2nonnx.load(export(small_cnn(), torch.randn(2, 2, 8, 8)).proto)


def weights_of(model):
    return [layer.weight for layer in model.layers]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("allocation", ["global", "uniform", "erk"])
def test_exact_accounting(method, allocation, cnn_model):
    density = 0.1
    pruned = prune(
        cnn_model,
        method,
        density,
        allocation=allocation,
        data=toy_data((2, 8, 8)),
        options={"iterations": 5},
    )
    rows = prune_table(pruned)
    total = sum(r.total for r in rows)
    assert sum(r.kept for r in rows) == round(density * total)
    if allocation == "uniform":
        assert all(abs(r.kept - density * r.total) <= 1 for r in rows)
    if allocation == "erk":
        shapes = {layer.weight: layer.weight_shape for layer in cnn_model.layers}
        factors = {w: sum(s) / np.prod(s) for w, s in shapes.items()}
        scale = round(density * total) / sum(factors[r.weight] * r.total for r in rows)
        assert all(
            abs(r.kept - min(r.total, scale * factors[r.weight] * r.total)) <= 1 for r in rows
        )
    record = pruned.metadata["stages"][-1]
    assert record["stage"] == "prune" and record["method"] == method
    # The record's counts are the masks' (counted here from the mask tensors themselves).
    assert [entry["kept"] for entry in record["layers"]] == [
        int(pruned.mask(layer.weight).sum()) for layer in pruned.layers
    ]


def test_expander_gives_every_unit_the_same_fan_in(mlp_model):
    pruned = prune(mlp_model, "expander", 0.1, allocation="uniform")
    for layer in pruned.layers:
        mask = pruned.mask(layer.weight)
        per_unit = np.moveaxis(mask, layer.unit_axis, 0).reshape(layer.units, -1).sum(axis=1)
        assert per_unit.max() - per_unit.min() <= 1


def hand_snip(net: nn.Module, x, y) -> dict[str, np.ndarray]:
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    scores = {
        n: (p * p.grad).abs().detach().double()
        for n, p in net.named_parameters()
        if n.endswith("weight") and p.dim() > 1
    }
    total = sum(float(s.sum()) for s in scores.values())
    return {n: (s / total).numpy() for n, s in scores.items()}


def hand_grasp(net: nn.Module, x, y, temperature=200.0) -> dict[str, np.ndarray]:
    weights = {n: p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() > 1}
    params = list(weights.values())
    g0 = torch.autograd.grad(nn.functional.cross_entropy(net(x) / temperature, y), params)
    g1 = torch.autograd.grad(
        nn.functional.cross_entropy(net(x) / temperature, y), params, create_graph=True
    )
    hg = torch.autograd.grad(
        sum((a * b.detach()).sum() for a, b in zip(g1, g0, strict=True)), params
    )
    return {
        n: (p * h).detach().double().numpy() for (n, p), h in zip(weights.items(), hg, strict=True)
    }


def hand_synflow(net: nn.Module, sample_shape, density, iterations) -> dict[str, np.ndarray]:
    net = net.double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    weights = {n: p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() > 1}
    masks = {n: torch.ones_like(p) for n, p in weights.items()}
    originals = {n: p.detach().clone() for n, p in weights.items()}
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for n, p in weights.items():
                p.copy_(originals[n] * masks[n])
        net.zero_grad()
        net(torch.ones(1, *sample_shape, dtype=torch.float64)).sum().backward()
        scores = {n: (p * p.grad).abs().detach() for n, p in weights.items()}
        flat = torch.cat(
            [torch.where(masks[n] > 0, s, -torch.inf).flatten() for n, s in scores.items()]
        )
        keep = round(density ** (k / iterations) * flat.numel())
        threshold_order = torch.argsort(-flat, stable=True)[:keep]
        kept = torch.zeros_like(flat)
        kept[threshold_order] = 1
        offset = 0
        for n, s in scores.items():
            masks[n] = kept[offset : offset + s.numel()].reshape(s.shape)
            offset += s.numel()
    return {n: np.where(masks[n].numpy() > 0, scores[n].numpy(), -np.inf) for n in weights}


def context_for(model, data=None, density=0.2, batch_size=40, options=None):
    from n2nonnx.pruning.allocation import masks_from_scores

    return ScoringContext(
        model=model,
        weights=weights_of(model),
        density=density,
        rng=np.random.default_rng(0),
        data=data,
        batch_size=batch_size,
        options=options or {},
        allocate=lambda scores, target: masks_from_scores(scores, target, None),
    )


def torch_names(model) -> dict[str, str]:
    """ONNX weight name -> torch parameter name (the exporter keeps names, e.g. '0.weight')."""
    return {w: w for w in weights_of(model)}


@pytest.mark.parametrize(("build", "shape"), [(small_mlp, (20,)), (small_cnn, (2, 8, 8))])
def test_snip_matches_hand_written_torch(build, shape):
    net = build()
    model = n2nonnx.load(export(net, torch.randn(2, *shape)).proto)
    data = toy_data(shape)
    ours = get_criterion("snip").score(context_for(model, data))
    # The criterion draws its batch with the context's generator (seed 0): same order here,
    # so both sides sum the per-sample gradients in the same order.
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(data.x_train)))
    expected = hand_snip(net.eval(), data.x_train[order], data.y_train[order])
    for name in weights_of(model):
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(("build", "shape"), [(small_mlp, (20,)), (small_cnn, (2, 8, 8))])
def test_grasp_matches_hand_written_torch(build, shape):
    net = build()
    model = n2nonnx.load(export(net, torch.randn(2, *shape)).proto)
    data = toy_data(shape, count=40)  # 8 per class: all of them are GraSP's sample
    ours = get_criterion("grasp").score(context_for(model, data))
    expected = hand_grasp(net.eval(), data.x_train, data.y_train)
    for name in weights_of(model):
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(("build", "shape"), [(small_mlp, (20,)), (small_cnn, (2, 8, 8))])
def test_synflow_matches_hand_written_torch(build, shape):
    net = build()
    model = n2nonnx.load(export(net, torch.randn(2, *shape)).proto)
    ours = get_criterion("synflow").score(
        context_for(model, density=0.2, options={"iterations": 4, "sample_shape": shape})
    )
    expected = hand_synflow(net, shape, 0.2, 4)
    for name in weights_of(model):
        np.testing.assert_array_equal(np.isinf(ours[name]), np.isinf(expected[name]))
        finite = np.isfinite(expected[name])
        np.testing.assert_allclose(ours[name][finite], expected[name][finite], rtol=1e-5)


def test_density_one_changes_nothing(cnn_model):
    pruned = prune(cnn_model, "magnitude", 1.0)
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(pruned, x)[0], run(cnn_model, x)[0])


def test_pruned_model_runs_in_onnxruntime_and_matches_backend(cnn_model, tmp_path):
    from n2nonnx.backend import OnnxModule

    pruned = prune(cnn_model, "snip", 0.1, data=toy_data((2, 8, 8)))
    path = n2nonnx.save(pruned, tmp_path / "pruned.onnx")
    reloaded = n2nonnx.load(path)
    assert set(mask_arrays(reloaded)) == set(weights_of(cnn_model))
    x = np.random.default_rng(1).standard_normal((7, 2, 8, 8)).astype(np.float32)
    module = OnnxModule(reloaded).eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, run(str(path), x)[0], rtol=1e-5, atol=1e-6)
    for layer in reloaded.layers:  # the stored weights are zero where the mask is
        assert np.all(reloaded.initializer(layer.weight)[reloaded.mask(layer.weight) == 0] == 0)


def test_masked_weights_stay_zero_through_training(mlp_model):
    from n2nonnx.training import train

    pruned = prune(mlp_model, "random", 0.1)
    data = toy_data((20,), count=64)
    result = train(
        pruned,
        data,
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-3,
        seed=0,
        progress=False,
    )
    trained = n2nonnx.load(result.model.proto)
    for layer in trained.layers:
        mask = trained.mask(layer.weight)
        weight = trained.initializer(layer.weight)
        assert np.all(weight[mask == 0] == 0)
        assert not np.array_equal(weight, pruned.initializer(layer.weight))  # it did train


def test_same_seed_same_bytes(cnn_model, tmp_path):
    files = []
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        files.append(
            n2nonnx.save(
                prune(cnn_model, "random", 0.1, seed=seed), tmp_path / f"{name}.onnx"
            ).read_bytes()
        )
    assert files[0] == files[1] and files[0] != files[2]


def test_user_masks_and_exclusion(mlp_model, tmp_path):
    first, second, last = weights_of(mlp_model)
    rng = np.random.default_rng(0)
    given = {first: (rng.random((32, 20)) < 0.5).astype(np.float32)}
    np.savez(tmp_path / "masks.npz", **given)
    pruned = prune(mlp_model, masks=tmp_path / "masks.npz")
    np.testing.assert_array_equal(pruned.mask(first), given[first])
    assert pruned.mask(second) is None
    kept = prune(mlp_model, "magnitude", 0.1, exclude=[first])
    assert kept.mask(first) is None and kept.mask(second) is not None
    rows = prune_table(kept, [second, last])
    assert sum(r.kept for r in rows) == round(0.1 * sum(r.total for r in rows))


def test_first_last_density(mlp_model):
    pruned = prune(mlp_model, "magnitude", 0.4, allocation="uniform", first_last_density=0.5)
    rows = {r.weight: r for r in prune_table(pruned)}
    first, middle, last = weights_of(mlp_model)
    assert rows[first].density == pytest.approx(0.5, abs=1 / rows[first].total)
    assert rows[last].density == pytest.approx(0.5, abs=1 / rows[last].total)
    assert sum(r.kept for r in rows.values()) == round(0.4 * sum(r.total for r in rows.values()))


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan")])
def test_bad_density(mlp_model, density):
    with pytest.raises(InvalidArgumentError, match="density must be in"):
        prune(mlp_model, "random", density)


def test_bad_method_data_and_patterns(mlp_model):
    with pytest.raises(InvalidArgumentError, match="unknown pruning method 'snap'"):
        prune(mlp_model, "snap", 0.1)
    with pytest.raises(DataError, match="needs data"):
        prune(mlp_model, "snip", 0.1)
    with pytest.raises(DataError):
        prune(mlp_model, "snip", 0.1, data=toy_data((7,)))
    with pytest.raises(InvalidArgumentError, match="matches no layer"):
        prune(mlp_model, "random", 0.1, exclude=["conv*"])


def test_cli_prune_and_inspect(tmp_path, capsys, zoo_models):
    source = zoo_models["mlp"]
    before = source.read_bytes()
    out = tmp_path / "pruned.onnx"
    assert (
        main(
            [
                "prune",
                str(source),
                "-o",
                str(out),
                "--method",
                "snip",
                "--density",
                "0.05",
                "--allocation",
                "global",
                "--data",
                "mnist1d",
                "--batch-size",
                "64",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    total_row = next(line.split() for line in printed.splitlines() if line.startswith("total"))
    assert total_row[1:3] == [str(round(0.05 * 2288)), "2,288"]  # 40x32 + 32x24 + 24x10 weights
    assert source.read_bytes() == before
    assert main(["inspect", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["nonzero_prunable_parameters"] == round(0.05 * 2288)
    assert all(layer["masked"] for layer in document["layers"])
    assert document["provenance"]["stages"][0]["method"] == "snip"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--density", "1.5"], "--density: 1.5 is not in (0, 1]"),
        (["--density", "0.1", "--method", "nope"], "invalid choice: 'nope'"),
        (["--density", "0.1", "--method", "grasp"], "needs data"),
        (["--density", "0.1", "--exclude", "zzz"], "matches no layer"),
        (["--density", "0.1", "--method", "snip", "--data", "digits"], "expects (batch, 40)"),
    ],
)
def test_cli_prune_bad_input(tmp_path, capsys, zoo_models, extra, words):
    out = tmp_path / "out.onnx"
    assert main(["prune", str(zoo_models["mlp"]), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("n2nonnx prune: error: ") and words in err and "Traceback" not in err
    assert not out.exists()


def test_top_k_equals_a_stable_sort_with_ties():
    from n2nonnx.pruning.allocation import _top_k_mask

    rng = np.random.default_rng(0)
    for _ in range(300):
        size = int(rng.integers(1, 60))
        values = rng.integers(0, 5, size).astype(float)
        values[rng.random(size) < 0.2] = -np.inf
        k = int(rng.integers(0, size + 1))
        expected = np.zeros(size, np.float32)
        expected[np.argsort(-values, kind="stable")[:k]] = 1
        np.testing.assert_array_equal(_top_k_mask(values, k), expected)


def test_rescale_restores_each_units_fan_in_scale(mlp_model):
    plain = prune(mlp_model, "expander", 0.25, allocation="uniform", seed=1)
    scaled = prune(mlp_model, "expander", 0.25, allocation="uniform", seed=1, rescale=True)
    for layer in plain.layers:
        before = np.moveaxis(plain.effective_weight(layer), layer.unit_axis, 0).reshape(
            layer.units, -1
        )
        after = np.moveaxis(scaled.effective_weight(layer), layer.unit_axis, 0).reshape(
            layer.units, -1
        )
        kept = np.count_nonzero(before, axis=1)
        np.testing.assert_array_equal(np.count_nonzero(after, axis=1), kept)
        np.testing.assert_allclose(after, before * np.sqrt(layer.fan_in / kept)[:, None], rtol=1e-6)
    assert scaled.metadata["stages"][-1]["rescale"] is True


def test_cli_prune_with_n2nskip(tmp_path, capsys, zoo_models):
    out = tmp_path / "n2n.onnx"
    assert (
        main(
            [
                "prune",
                str(zoo_models["mlp"]),
                "-o",
                str(out),
                "--method",
                "expander",
                "--density",
                "0.2",
                "--n2nskip",
                "--skip-share",
                "0.5",
                "--sampling",
                "uniform",
                "--rescale",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    model = n2nonnx.load(out)
    record = model.metadata["stages"][-1]
    assert record["stage"] == "n2nskip" and record["sampling"] == "uniform" and record["seed"] == 3
    sequential = [layer for layer in model.layers if not layer.is_skip]
    total = sum(layer.parameters for layer in sequential)
    nonzeros = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in model.layers)
    assert abs(nonzeros - round(0.2 * total)) <= len(sequential)
    assert any(layer.is_skip for layer in model.layers)


def test_nan_scores_and_bad_options_are_refused(mlp_model, tmp_path, capsys, zoo_models):
    from n2nonnx.pruning.allocation import masks_from_scores

    with pytest.raises(InvalidArgumentError, match="NaN"):
        masks_from_scores({"a": np.array([1.0, np.nan, 3.0])}, 0.5, None)
    out = tmp_path / "o.onnx"
    for extra, words in [
        (["--method", "grasp", "--data", "mnist1d", "--temperature", "0"], "temperature"),
        (["--method", "snip", "--data", "mnist1d", "--batch-size", "0"], "batch size"),
        (["--method", "synflow", "--iterations", "0"], "iterations"),
    ]:
        assert (
            main(["prune", str(zoo_models["mlp"]), "-o", str(out), "--density", "0.1", *extra]) == 2
        )
        assert words in capsys.readouterr().err and not out.exists()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert (
        main(
            [
                "prune",
                str(zoo_models["mlp"]),
                "-o",
                str(out),
                "--density",
                "0.1",
                "--masks",
                str(tmp_path / "bad.npz"),
            ]
        )
        == 2
    )
    assert "cannot read masks" in capsys.readouterr().err
