"""n2nonnx.prune takes every method the command line offers; option objects and name lists."""

from __future__ import annotations

import warnings

import pytest
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx import metadata, zoo
from n2nonnx.cli import build_parser
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.pipeline.methods import PRUNE_METHODS, PruneResult, method_kind, prune_model
from n2nonnx.pruning.options import PruneOptions
from n2nonnx.scl.options import SclOptions
from n2nonnx.skip.options import SkipOptions
from n2nonnx.structured.options import StructuredOptions

torch.set_num_threads(1)
DATA = "synthetic:features=12,classes=3,train=120,test=60"
FAST = {
    "scl": {"epochs": 1, "batch_size": 32},
    "snacs": {"samples_per_class": 10, "upper_limit": 0.75, "protect": 0.0, "groups": 2},
}
STAGE = {"at_init": "prune", "learned": "prune", "structured": "structured_prune"}


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = zoo.build("mlp", in_features=12, hidden=(32, 32, 16), classes=3)
    return n2nonnx.load(export(net, torch.randn(2, 12)).proto)


def cli_methods() -> tuple[str, ...]:
    verb = next(a for a in build_parser("prune")._actions if a.dest == "verb")
    method = next(a for a in verb.choices["prune"]._actions if a.dest == "method")
    return tuple(method.choices)


def test_the_api_offers_the_cli_methods():
    assert cli_methods() == PRUNE_METHODS


@pytest.mark.parametrize("method", PRUNE_METHODS)
def test_prune_accepts_every_cli_method(mlp, method):
    kind = method_kind(method)
    density = 0.9 if kind == "structured" else 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained model, SCL's short search
        result = prune_model(
            mlp, method, density, data=DATA, seed=0, progress=False, **FAST.get(method, {})
        )
        plain = n2nonnx.prune(mlp, method, density, data=DATA, seed=0, **FAST.get(method, {}))
    assert isinstance(result, PruneResult) and result.kind == kind
    record = metadata.stages(result.model.proto, STAGE[kind])[-1]
    assert record == result.record
    if kind == "structured":
        assert result.model.parameter_count <= 0.9 * mlp.parameter_count
    else:
        assert record["achieved_density"] == pytest.approx(0.2, abs=0.01)
    assert isinstance(plain, n2nonnx.Model)


def test_at_init_with_skips_keeps_the_budget(mlp):
    result = prune_model(mlp, "random", 0.2, skip={"skip_share": 0.5}, seed=1)
    record = metadata.stages(result.model.proto, "n2nskip")[-1]
    assert record["density"] == 0.2 and record["seed"] == 1 and record["skip_nonzeros"] > 0
    assert result.record["density"] == pytest.approx(0.1)  # the sequential part


def test_bad_options_are_refused_in_one_line(mlp):
    cases = [
        ({"method": "snacs", "density": 0.5, "prune_percent": 20}, "one prune level"),
        ({"method": "l1-filter", "density": 0.5, "allocation": "erk"}, "unknown option"),
        ({"method": "snip", "density": 0.2, "phi": "w"}, "unknown option"),
        ({"method": "scl", "density": 0.2, "repair": True}, "does not keep a mask"),
        ({"method": "snacs", "density": 0.5, "skip": {}}, "removes whole units"),
        ({"method": "random", "density": 0.2, "skip": {"sampling": "nope"}}, "sampling"),
    ]
    for options, match in cases:
        with pytest.raises(InvalidArgumentError, match=match):
            prune_model(mlp, data=DATA, **options)


def test_option_objects_are_validated_when_made():
    for make, match in [
        (lambda: PruneOptions(density=0), "density"),
        (lambda: PruneOptions(allocation="nope"), "allocation"),
        (lambda: PruneOptions(iterations=0), "iterations"),
        (lambda: SkipOptions(skip_share=1.0), "skip_share"),
        (lambda: SkipOptions(per_target=0), "per_target"),
        (lambda: SclOptions(), "density= .* or scl_lambda="),
        (lambda: SclOptions(density=0.1, mask_lr=0), "mask_lr"),
        (lambda: StructuredOptions(target_params=0.5, upper_limit="lots"), "upper_limit"),
        (lambda: StructuredOptions(method="l2", target_params=0.5), "unknown structured"),
    ]:
        with pytest.raises(InvalidArgumentError, match=match):
            make()
    assert StructuredOptions(target_params=0.5, upper_limit="0.5").upper_limit == 0.5
    assert PruneOptions(exclude="fc1").exclude == ("fc1",)
    with pytest.raises(AttributeError):
        PruneOptions().density = 0.5  # type: ignore[misc]


def test_name_lists_match_the_registries():
    from n2nonnx.pruning.criteria import CRITERIA, get_criterion
    from n2nonnx.pruning.options import AT_INIT_METHODS
    from n2nonnx.structured import baselines, snacs  # noqa: F401  (they fill the registry)
    from n2nonnx.structured.estimators import ESTIMATORS
    from n2nonnx.structured.options import ESTIMATOR_NAMES, METHODS, PRUNE_NAMES
    from n2nonnx.structured.orders import METHODS as REGISTERED
    from n2nonnx.structured.orders import get_method

    assert {get_criterion(name).name for name in AT_INIT_METHODS} == set(CRITERIA)
    get_method("snacs")
    assert set(METHODS) == set(REGISTERED) == set(PRUNE_NAMES.values())
    assert set(ESTIMATOR_NAMES) == set(ESTIMATORS)
