"""The package as a whole: one version, one exception family."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx import errors, zoo
from n2nonnx.deployment import deploy


def test_installed_version_is_the_package_version():
    # pyproject.toml reads the version from n2nonnx.__version__; an editable install made
    # before that change still reports the old metadata (reinstall: pip install -e . --no-deps)
    assert importlib.metadata.version("n2nonnx") == n2nonnx.__version__


def test_deploy_raises_the_verification_error_of_n2nonnx_errors():
    from n2nonnx.deployment import verify

    assert verify.VerificationError is errors.VerificationError
    torch.manual_seed(0)
    net = zoo.build("mlp", in_features=12, hidden=(64, 64), classes=3)
    model = n2nonnx.prune(
        n2nonnx.load(export(net, torch.randn(2, 12)).proto), "random", 0.3, seed=0
    )
    with pytest.raises(errors.VerificationError, match="disagrees") as caught:
        deploy(model, weights_fp16=True, rtol=1e-12)  # fp16 weights cannot meet that
    assert isinstance(caught.value, errors.WorkFailedError)
