"""Shared fixtures: the zoo models exported from PyTorch through converters/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402

# name -> (factory options, example input shape)
ZOO_CASES = {
    "mlp": ({"in_features": 40, "hidden": (32, 24)}, (2, 40)),
    "vgg": ({"in_channels": 3, "size": 16, "widths": (8, 8, 16, 16), "hidden": 32}, (2, 3, 16, 16)),
    "resnet": ({"widths": (8, 16)}, (2, 3, 16, 16)),
    "densenet": ({"stem": 8, "growth": 4, "layers": 3}, (2, 3, 8, 8)),
    "mobilenet": ({"widths": (16, 32)}, (2, 3, 16, 16)),
    "transformer": ({"features": 8, "width": 32, "heads": 4}, (2, 6, 8)),
}
_FACTORIES = {"vgg": "vgg2d"}


def export_zoo(name: str, directory: Path, seed: int = 0) -> Path:
    options, shape = ZOO_CASES[name]
    torch.manual_seed(seed)
    module = zoo.build(_FACTORIES.get(name, name), **options)
    report = export(module, torch.randn(*shape), directory / f"{name}.onnx")
    assert report.max_abs_diff < 1e-4
    return report.path


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory) -> dict[str, Path]:
    """Every zoo model exported once per test session: name -> .onnx path."""
    directory = tmp_path_factory.mktemp("zoo")
    return {name: export_zoo(name, directory) for name in ZOO_CASES}
