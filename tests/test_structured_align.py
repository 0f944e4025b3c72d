"""Aligned structured pruning: kept unit counts in multiples of ``align``, the target still met."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.structured import prune_structured
from n2nonnx.zoo import build


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    torch.manual_seed(0)
    module = build("vgg2d", widths=(48, 64, 96, 128), hidden=96).eval()
    path = tmp_path_factory.mktemp("align") / "vgg.onnx"
    export(module, torch.randn(1, 3, 32, 32), path)
    return n2nonnx.load(path)


@pytest.mark.filterwarnings("ignore:the model looks untrained")
@pytest.mark.parametrize("method", ["l1", "random"])
@pytest.mark.parametrize("percent", [25, 50, 75])
def test_kept_counts_are_multiples_and_the_target_holds(vgg, method, percent):
    result = prune_structured(vgg, method, prune_percent=percent, align=16)
    target = int(np.floor((1 - percent / 100) * result.params_before))
    assert result.params_after <= target
    dense = {layer.name: layer.units for layer in vgg.layers}
    for layer in result.model.layers:
        assert layer.units % 16 == 0 or layer.units == dense[layer.name], (layer.name, layer.units)
    exact = prune_structured(vgg, method, prune_percent=percent, align=0)
    assert any(la.units % 16 for la in exact.model.layers[:-1])  # alignment changed something
    assert exact.params_after <= target


def test_bad_align_is_refused(vgg):
    with pytest.raises(InvalidArgumentError, match="align must be an integer >= 0"):
        prune_structured(vgg, "l1", prune_percent=50, align=-16)
