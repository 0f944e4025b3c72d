"""The units core on real exports: the regressions it fixes, and one answer to "which units are dead".

- a ResNet-18-style export pruned with SNIP at 4% and given N2NSkip connections deploys
  (a skip source that loses every gathered unit once sent the Concat of the skips into fc
  the wrong axis and deploy refused);
- a transformer encoder, and an MLP whose LayerNorm is written out as ReduceMean / Sub /
  Div, deploy exactly: units that reach a normalisation over their axis are kept, and the
  summary says so;
- ``connectivity``, the unit graph and ``deploy`` count the same dead units on an MLP, a
  VGG, a ResNet and an N2NSkip model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import n2nonnx
from converters.pytorch import export
from n2nonnx.deployment.dead import find_dead_units
from n2nonnx.masks import fold_masks
from n2nonnx.units import dead_units
from n2nonnx.zoo import build


class _ManualLayerNorm(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width))
        self.bias = nn.Parameter(torch.randn(width))

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        variance = (centred * centred).mean(-1, keepdim=True)
        return centred / torch.sqrt(variance + 1e-5) * self.weight + self.bias


class NormedMLP(nn.Module):
    """Token-wise MLP with a LayerNorm after its first layer (built-in or written out)."""

    def __init__(self, decomposed: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.norm = _ManualLayerNorm(32) if decomposed else nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(self.norm(self.fc1(x))))).mean(1)


def _export(module: nn.Module, shape, path) -> n2nonnx.Model:
    torch.manual_seed(0)
    report = export(module.eval(), torch.randn(*shape), path)
    assert report.max_abs_diff < 1e-4
    return n2nonnx.load(path)


def test_resnet18_snip_skips_deploy(tmp_path):
    torch.manual_seed(0)
    resnet18 = build("resnet", widths=(16, 32, 64, 128), blocks=2)  # ResNet-18-style
    model = _export(resnet18, (1, 3, 32, 32), tmp_path / "resnet18.onnx")
    rng = np.random.default_rng(0)
    data = {
        "x_train": rng.standard_normal((64, 3, 32, 32)).astype(np.float32),
        "y_train": rng.integers(0, 10, 64),
        "x_test": rng.standard_normal((16, 3, 32, 32)).astype(np.float32),
        "y_test": rng.integers(0, 10, 16),
    }
    np.savez(tmp_path / "own.npz", **data)
    pruned = n2nonnx.prune(model, "snip", density=0.04, data=str(tmp_path / "own.npz"), seed=0)
    skipped = n2nonnx.add_n2nskip(pruned, density=0.05, skip_share=0.2, seed=0)
    deployed = n2nonnx.deploy(skipped)  # verified against the input model in onnxruntime
    assert deployed.summary["units"]["removed"] > 0
    assert deployed.verification.max_abs_diff <= 1e-5 * max(deployed.verification.scale, 1)


@pytest.mark.parametrize("decomposed", [False, True], ids=["LayerNormalization", "written-out"])
def test_units_before_a_layer_norm_are_kept_and_deploy_is_exact(tmp_path, decomposed):
    model = _export(NormedMLP(decomposed), (2, 16, 8), tmp_path / "mlp.onnx")
    assert "mixes units" in model.layer("/fc1/MatMul").removal_blocker
    for seed in range(3):
        deployed = n2nonnx.deploy(n2nonnx.prune(model, "random", density=0.05, seed=seed))
        kept = deployed.summary["units"]["kept_blocked"]
        assert "/fc1/MatMul" in kept and "mixes units" in kept["/fc1/MatMul"][1]
        assert "/fc1/MatMul" not in deployed.summary["units"]["per_layer"]


def test_transformer_encoder_deploys_exactly(tmp_path):
    from n2nonnx.zoo import build

    model = _export(build("transformer"), (2, 16, 8), tmp_path / "encoder.onnx")
    for seed in range(3):
        deployed = n2nonnx.deploy(n2nonnx.prune(model, "random", density=0.05, seed=seed))
        assert deployed.summary["units"]["kept_blocked"]
        assert deployed.summary["verification"]["max_abs_diff"] <= 1e-6


def _zoo(name: str, shape, tmp_path, **options) -> n2nonnx.Model:
    from n2nonnx.zoo import build

    return _export(build(name, **options), shape, tmp_path / f"{name}.onnx")


def _models(tmp_path):
    mlp = _zoo("mlp", (1, 40), tmp_path)
    vgg = _zoo("vgg1d", (1, 1, 40), tmp_path)
    resnet = _zoo("resnet", (1, 3, 16, 16), tmp_path)
    pruned = {
        "mlp": n2nonnx.prune(mlp, "random", density=0.03, seed=1),
        "vgg": n2nonnx.prune(vgg, "random", density=0.03, seed=2),
        "resnet": n2nonnx.prune(resnet, "random", density=0.02, seed=3),
    }
    pruned["n2nskip"] = n2nonnx.add_n2nskip(pruned["vgg"], skip_share=0.3, seed=4)
    return pruned


def test_connectivity_and_deploy_count_the_same_dead_units(tmp_path):
    for name, model in _models(tmp_path).items():
        core = dead_units(model)
        report = n2nonnx.analyze(None, model, spectrum=False).models[0]
        assert report.dead_units == core, name
        assert sum(core.values()) > 0, name  # the check means something
        found = find_dead_units(fold_masks(model))

        def marked(table, layer):
            flags = np.zeros(layer.units, dtype=bool)
            flags[table.get(layer.name, [])] = True
            return flags

        no_input = {la.name: marked(found.no_input, la) for la in model.layers}
        for layer in model.layers:  # a skip's units are its target's: reached if either is
            if layer.is_skip:
                no_input[layer.merges_into] &= no_input[layer.name]
        deploy_dead = {
            la.name: int((no_input[la.name] | marked(found.no_output, la)).sum())
            for la in model.layers
            if not la.is_skip
        }
        assert deploy_dead == core, name


def test_dynamo_exported_encoder_deploys_exactly(tmp_path):
    """The issue's case: a transformer encoder from the dynamo exporter, random 5%, deploy."""
    from n2nonnx.zoo import build

    torch.manual_seed(0)
    path = tmp_path / "encoder.onnx"
    report = export(build("transformer").eval(), torch.randn(2, 16, 8), path, dynamo=True)
    assert report.max_abs_diff < 1e-4
    model = n2nonnx.load(path)
    assert "LayerNormalization" in {node.op_type for node in model.proto.graph.node}
    for seed in range(2):
        deployed = n2nonnx.deploy(n2nonnx.prune(model, "random", density=0.05, seed=seed))
        kept = deployed.summary["units"]["kept_blocked"].values()
        assert any("LayerNormalization" in why for _, why in kept)
        assert deployed.summary["verification"]["max_abs_diff"] <= 1e-6
