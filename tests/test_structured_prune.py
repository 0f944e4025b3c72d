"""Structured pruning (SNACS, L1, random) on trained zoo CNNs, checked in onnxruntime."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx import metadata, zoo
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.runtime import run
from n2nonnx.structured import prune_structured
from n2nonnx.structured.constraints import limit_from_sweep
from n2nonnx.structured.sensitivity import protected_units, sensitivities
from n2nonnx.training import train
from n2nonnx.units.coupling import find_components

torch.set_num_threads(1)


def trained(tmp_path_factory, name, factory, options, shape, data, epochs=2):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export(zoo.build(factory, **options), torch.randn(2, *shape), path)
    return train(n2nonnx.load(path), data, epochs=epochs, batch_size=64).model


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    return trained(tmp_path_factory, "vgg", "vgg1d", {"widths": (8, 8, 16, 16)}, (1, 40), "mnist1d")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return trained(
        tmp_path_factory,
        "resnet",
        "resnet",
        {"in_channels": 1, "widths": (8, 16)},
        (1, 8, 8),
        "digits",
    )


def fast(**options):
    """Few samples, and exact widths (align=0): these tests check the exact cut."""
    return {"samples_per_class": 40, "align": 0, **options}


def test_snacs_makes_weights_smaller_and_runs_in_onnxruntime(vgg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained model: no untrained warning
        result = prune_structured(vgg, "snacs", data="mnist1d", prune_percent=15, **fast())
    target = math.floor(0.85 * vgg.parameter_count)
    assert result.params_after <= target < result.params_after + 200
    assert (
        result.params_after == result.model.parameter_count
        and result.flops_after < result.flops_before
    )
    for name, units in result.removed.items():
        before, after = vgg.layer(name), result.model.layer(name)
        assert after.units == before.units - len(units) > 0
        assert result.upper_limits[name] > 0
        assert len(units) <= math.floor(result.upper_limits[name] * before.units + 1e-9)
    x = np.random.default_rng(0).standard_normal((3, 1, 40)).astype(np.float32)
    assert run(result.model, x)[0].shape == (3, 10)
    record = metadata.stages(result.model.proto, "structured_prune")[-1]
    assert record["method"] == "snacs" and record["params_after"] == result.params_after
    assert result.decision_seconds > 0


def test_snacs_never_removes_protected_units(vgg):
    result = prune_structured(vgg, "snacs", data="mnist1d", prune_percent=15, **fast(protect=0.5))
    scores = sensitivities(vgg)
    for name, units in result.removed.items():
        shielded = np.flatnonzero(protected_units(scores[name], 0.5))
        assert not set(units) & set(shielded.tolist())
        assert result.protected[name] == len(shielded)


def test_methods_remove_equal_parameters(vgg):
    kept = [
        prune_structured(vgg, m, data="mnist1d", target_params=0.8, **fast()).params_after
        for m in ("snacs", "l1", "random")
    ]
    target = math.floor(0.8 * vgg.parameter_count)
    assert all(target - 200 < k <= target for k in kept)


def test_l1_removes_the_smallest_filters_uniformly(vgg):
    result = prune_structured(vgg, "l1", prune_percent=30)
    fractions = []
    for layer in vgg.layers[:-1]:
        removed = result.removed.get(layer.name, [])
        fractions.append(len(removed) / layer.units)
        norms = np.abs(vgg.initializer(layer.weight)).reshape(layer.units, -1).sum(1)
        if removed:
            assert norms[removed].max() <= np.delete(norms, removed).min()
    assert max(fractions) - min(fractions) <= 0.25


def test_random_is_seeded(vgg):
    a = prune_structured(vgg, "random", prune_percent=20, seed=1).removed
    b = prune_structured(vgg, "random", prune_percent=20, seed=1).removed
    c = prune_structured(vgg, "random", prune_percent=20, seed=2).removed
    assert a == b and a != c


def test_residual_channels_go_together(resnet):
    for method in ("snacs", "l1"):
        result = prune_structured(
            resnet, method, data="digits", prune_percent=20, **fast(protect=0.0)
        )
        removed = result.removed
        assert removed.get("/0/Conv", []) == removed.get("/3/conv2/Conv", [])
        assert removed.get("/4/shortcut/shortcut.0/Conv", []) == removed.get("/4/conv2/Conv", [])
        x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
        assert run(result.model, x)[0].shape == (2, 10)


def test_grouped_convolution_channels_are_kept(zoo_models):
    model = n2nonnx.load(zoo_models["mobilenet"])
    fixed = {name for c in find_components(model) if c.fixed for name, _ in c.units}
    grouped = [
        layer.name for layer in model.layers if layer.groups > 1 and layer.in_units != layer.groups
    ]
    assert grouped and set(grouped) <= fixed
    assert model.layers[-1].name in fixed  # reaches the graph output


def test_limit_rule():
    assert limit_from_sweep([0.9, 0.9, 0.8, 0.5, 0.2], percents=(1, 3, 5, 7, 9)) == 0.07
    assert limit_from_sweep([0.5] * 4, percents=(1, 3, 5, 7)) == 0.07


def test_bad_input_is_refused_before_work(vgg):
    with pytest.raises(DataError, match="--data"):
        prune_structured(vgg, "snacs", prune_percent=20)
    with pytest.raises(DataError, match="--data"):
        prune_structured(vgg, "l1", prune_percent=20, finetune_epochs=1)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        prune_structured(vgg, "l1", prune_percent=20, target_params=0.5)
    with pytest.raises(InvalidArgumentError, match="prune_percent"):
        prune_structured(vgg, "l1", prune_percent=100)
    with pytest.raises(InvalidArgumentError, match="phi"):
        prune_structured(vgg, "snacs", data="mnist1d", prune_percent=20, phi="cube")
    with pytest.raises(InvalidArgumentError, match="at most"):
        prune_structured(vgg, "random", target_params=0.001)
    with pytest.raises(InvalidArgumentError, match="at most"):
        prune_structured(vgg, "snacs", data="mnist1d", prune_percent=60, **fast())


def test_untrained_model_warns(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fresh.onnx"
    export(zoo.build("vgg1d", widths=(8, 8, 16, 16)), torch.randn(2, 1, 40), path)
    with pytest.warns(UserWarning, match="untrained"):
        prune_structured(n2nonnx.load(path), "l1", prune_percent=10)


def test_finetune_in_one_step(vgg):
    result = prune_structured(vgg, "l1", data="mnist1d", prune_percent=20, finetune_epochs=1)
    assert result.finetune is not None and len(result.finetune.history) == 1
    assert metadata.stages(result.model.proto, "train")[-1]["optimizer"] == "sgd"
    assert result.model.parameter_count == result.params_after
