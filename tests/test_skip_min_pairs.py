"""N2NSkip ``min_pair_weights``: pairs below the minimum are dropped, the skip budget stays exact.

- :func:`~n2nonnx.skip.budget.apportion_with_minimum` keeps the total and drops the smallest;
- on a ResNet-style export no kept pair holds fewer than the minimum and the skip and
  sequential counts are those of ``min_pair_weights=1``;
- a skip budget below the minimum goes to one pair; 1 changes nothing (byte for byte);
- the option is validated and reaches ``skip``, ``prune --n2nskip`` and ``run`` through
  :class:`~n2nonnx.skip.SkipOptions`; ``skip`` prints one summary line, the pairs with ``-v``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

import n2nonnx
from n2nonnx import masks, metadata
from n2nonnx.cli import main
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.skip import SkipOptions, add_n2nskip
from n2nonnx.skip.budget import apportion_with_minimum


def _record(model: n2nonnx.Model) -> dict:
    return metadata.stages(model.proto, "n2nskip")[-1]


def _skip_nonzeros(model: n2nonnx.Model) -> tuple[int, int]:
    """(skip, sequential) non-zeros counted on the weights."""
    skip = sequential = 0
    for layer in model.layers:
        count = int(np.count_nonzero(model.effective_weight(layer)))
        if layer.is_skip:
            skip += count
        else:
            sequential += count
    return skip, sequential


@pytest.fixture(scope="module")
def pruned_resnet(zoo_models) -> n2nonnx.Model:
    return n2nonnx.prune(n2nonnx.load(zoo_models["resnet"]), "random", density=0.08, seed=1)


def test_apportion_with_minimum_keeps_the_total():
    weights = [1000, 500, 30, 10, 5, 1]
    parts, dropped = apportion_with_minimum(200, weights, weights, 1)
    assert sum(parts) == 200 and dropped == []
    parts, dropped = apportion_with_minimum(200, weights, weights, 20)
    assert sum(parts) == 200
    assert all(p == 0 or p >= 20 for p in parts) and parts[0] > 0 and parts[1] > 0
    assert sorted(dropped) == [2, 3, 4, 5] and dropped[0] == 5  # the smallest goes first
    # below the minimum in all: one part holds the whole total
    parts, dropped = apportion_with_minimum(7, weights, weights, 20)
    assert parts == [7, 0, 0, 0, 0, 0] and len(dropped) == 5
    # the others cannot hold the total: the small part stays
    parts, dropped = apportion_with_minimum(60, [50, 10], [50, 10], 20)
    assert parts == [50, 10] and dropped == []


@pytest.mark.parametrize("sampling", ["block", "uniform", "channel"])
def test_minimum_keeps_the_budget_and_no_pair_below_it(pruned_resnet, sampling):
    plain = add_n2nskip(pruned_resnet, skip_share=0.2, sampling=sampling, seed=0)
    plain_record = _record(plain)
    small = [p for p in plain_record["pairs"] if p["nonzeros"] < 32]
    assert small  # the case the option is for
    model = add_n2nskip(pruned_resnet, skip_share=0.2, sampling=sampling, min_pair_weights=32)
    record = _record(model)
    assert record["skip_nonzeros"] == plain_record["skip_nonzeros"]
    assert record["sequential"]["after"] == plain_record["sequential"]["after"]
    assert _skip_nonzeros(model) == _skip_nonzeros(plain)
    assert _skip_nonzeros(model)[0] == record["skip_nonzeros"]
    assert all(pair["nonzeros"] >= 32 for pair in record["pairs"])
    assert record["min_pair_weights"] == 32
    assert 0 < len(record["pairs"]) < len(plain_record["pairs"])
    dropped = [e for e in record["left_out"] if "min_pair_weights=32" in e["reason"]]
    assert len(dropped) == record["below_minimum"] > 0
    total = sum(layer.parameters for layer in model.layers if not layer.is_skip)
    assert record["budget"] == round(record["density"] * total)
    assert sum(_skip_nonzeros(model)) == record["budget"]


def test_minimum_with_connectivity_placement_keeps_the_budget(pruned_resnet):
    plain = add_n2nskip(pruned_resnet, skip_share=0.2, placement="connectivity")
    model = add_n2nskip(
        pruned_resnet, skip_share=0.2, placement="connectivity", min_pair_weights=32
    )
    assert _skip_nonzeros(model) == _skip_nonzeros(plain)
    assert len(_record(model)["pairs"]) < len(_record(plain)["pairs"])


def test_budget_below_the_minimum_goes_to_one_pair(pruned_resnet, caplog):
    plain = add_n2nskip(pruned_resnet, skip_share=0.01)
    budget = _record(plain)["skip_nonzeros"]
    assert 0 < budget < 10_000
    with caplog.at_level(logging.INFO, logger="n2nonnx"):
        model = add_n2nskip(pruned_resnet, skip_share=0.01, min_pair_weights=10_000)
    record = _record(model)
    assert len(record["pairs"]) == 1 and record["pairs"][0]["nonzeros"] == budget
    assert _skip_nonzeros(model) == _skip_nonzeros(plain)
    assert "one pair holds it all" in caplog.text


def test_minimum_one_changes_nothing(pruned_resnet):
    default = add_n2nskip(pruned_resnet, skip_share=0.2)
    explicit = add_n2nskip(pruned_resnet, skip_share=0.2, min_pair_weights=1)
    assert default.proto.SerializeToString() == explicit.proto.SerializeToString()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_minimum_is_validated(bad):
    with pytest.raises(InvalidArgumentError, match="min_pair_weights"):
        SkipOptions(min_pair_weights=bad)


def test_skip_verb_prints_one_summary_line(pruned_resnet, tmp_path, capsys, caplog):
    source = n2nonnx.save(pruned_resnet, tmp_path / "pruned.onnx")
    out = tmp_path / "skip.onnx"
    argv = ["skip", str(source), "-o", str(out), "--skip-share", "0.2", "--min-pair-weights", "32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = _record(n2nonnx.load(out))
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and "->" not in printed
    assert (
        f"{len(record['pairs'])} skip pairs, {record['below_minimum']} dropped/merged below 32 "
        "weights" in lines[0]
    )
    assert record["below_minimum"] > 0
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="n2nonnx"):
        assert main(["-v", *argv, "--force"]) == 0
    pair_lines = [r for r in caplog.records if "->" in r.getMessage() and "k=" in r.getMessage()]
    assert len(pair_lines) == len(record["pairs"])


def test_prune_and_run_take_the_option(zoo_models, tmp_path, capsys):
    for verb in ("skip", "prune", "run"):
        assert main([verb, "--help"]) == 0
        assert "--min-pair-weights N" in capsys.readouterr().out
    out = tmp_path / "skip.onnx"
    argv = ["prune", str(zoo_models["vgg"]), "-o", str(out), "--method", "random"]
    assert main(argv + ["--density", "0.2", "--n2nskip", "--min-pair-weights", "64"]) == 0
    record = _record(n2nonnx.load(out))
    assert record["min_pair_weights"] == 64
    assert all(pair["nonzeros"] >= 64 for pair in record["pairs"]) or len(record["pairs"]) == 1


def test_dense_model_with_density_and_minimum(zoo_models):
    model = n2nonnx.load(zoo_models["mlp"])
    pruned = masks.apply_masks(
        model, {layer.weight: np.ones(layer.weight_shape, np.float32) for layer in model.layers}
    )
    result = add_n2nskip(pruned, density=0.3, min_pair_weights=16, seed=2)
    assert all(p["nonzeros"] >= 16 for p in _record(result)["pairs"])
    assert sum(_skip_nonzeros(result)) == _record(result)["budget"]
