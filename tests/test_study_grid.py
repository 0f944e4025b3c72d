"""The study's grid: variant options, varied factors, widths, cell keys, and a run over them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from n2nonnx.cli import main
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.study.grid import Cell, StudyPlan, arch_spec, cell_path, parse_variant


def test_variant_options_are_parsed_and_checked():
    assert parse_variant("N2NSkip-RP:placement=connectivity,repair=on,skip-share=0.2") == (
        "N2NSkip-RP",
        {"placement": "connectivity", "repair": True, "skip_share": 0.2},
    )
    for spec, words in [
        ("RP:placement=connectivity", "does not apply to RP"),
        ("N2NSkip-RP:placement=everywhere", "not one of random, connectivity"),
        ("N2NSkip-RP:colour=red", "unknown study option 'colour'"),
        ("N2NSkip-RP:repair", "is not OPTION=VALUE"),
        ("N2NSkip-RP:skip_share=1.5", "[0, 1)"),
        ("Bogus", "unknown variant 'Bogus'"),
    ]:
        with pytest.raises(
            InvalidArgumentError, match=words.replace("[", r"\[").replace(")", r"\)")
        ):
            parse_variant(spec)


def test_factors_multiply_only_the_variants_they_apply_to():
    plan = StudyPlan(
        archs=["vgg1d"],
        variants=["dense", "RP", "N2NSkip-RP", "N2NSkip-RP:placement=connectivity"],
        densities=[0.05],
        seeds=[0],
        widths=[1, 2],
        factors={"allocation": ["erk", "uniform"], "sampling": ["block", "uniform"]},
    )
    labels = {(c.arch, c.label) for c in plan.cells()}
    assert labels == {
        (arch, label)
        for arch in ("vgg1d", "vgg1d-x2")
        for label in [
            "dense",
            "RP",  # erk is RP's own allocation: no key
            "RP [allocation=uniform]",
            "N2NSkip-RP",
            "N2NSkip-RP [sampling=uniform]",
            "N2NSkip-RP [allocation=uniform]",
            "N2NSkip-RP [allocation=uniform, sampling=uniform]",
            "N2NSkip-RP [placement=connectivity]",
            "N2NSkip-RP [allocation=uniform, placement=connectivity]",
            "N2NSkip-RP [sampling=uniform, placement=connectivity]",
            "N2NSkip-RP [allocation=uniform, sampling=uniform, placement=connectivity]",
        ]
    }
    assert len(plan.cells()) == 2 * 11  # no duplicates
    cell = Cell("vgg1d-x2", "N2NSkip-RP", 0.05, 1, (("allocation", "uniform"), ("join", "preact")))
    config = plan.job(cell)
    assert (config.allocation, config.skip_share, config.skip_options) == (
        "uniform",
        0.5,
        {"join": "preact"},
    )
    assert cell_path(Path("o"), cell) == Path(
        "o/cells/vgg1d-x2/N2NSkip-RP-d0.05-s1-allocation=uniform-join=preact.json"
    )


def test_a_zero_skip_share_is_written_as_a_number_not_off():
    plan = StudyPlan(
        archs=["mlp"],
        variants=["N2NSkip-RP:repair=on"],
        densities=[0.1],
        seeds=[0],
        factors={"skip_share": [0.0, 0.25]},
    )
    cells = plan.cells()
    assert [c.label for c in cells] == [
        "N2NSkip-RP [repair=on, skip_share=0]",
        "N2NSkip-RP [repair=on, skip_share=0.25]",
    ]
    assert cell_path(Path("o"), cells[0]).name == "N2NSkip-RP-d0.1-s0-repair=on-skip_share=0.json"


def test_a_bad_plan_fails_before_any_model_is_written(tmp_path):
    from n2nonnx.study import run_study

    plan = StudyPlan(archs=["mlp"], variants=["RP"], densities=[1.5], seeds=[0])
    with pytest.raises(InvalidArgumentError, match="density must be in"):
        run_study(plan, tmp_path / "study")
    assert not (tmp_path / "study" / "models").exists()


def test_widths_scale_every_layer():
    assert arch_spec("vgg1d-x2")[1]["widths"] == [64, 64, 128, 128, 256, 256]
    assert arch_spec("mlp-x0.5")[1]["hidden"] == [128] * 8
    with pytest.raises(InvalidArgumentError, match="unknown study architecture"):
        arch_spec("resnet-x2")


def test_study_runs_a_grid_of_options(tmp_path):
    out = tmp_path / "study"
    args = [
        "study",
        "--out",
        str(out),
        "--arch",
        "mlp",
        "--width",
        "0.25",
        "--allocation",
        "erk",
        "uniform",
        "--variants",
        "RP",
        "N2NSkip-RP:join=preact",
        "--densities",
        "0.1",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    folder = out / "cells" / "mlp-x0.25"
    assert sorted(p.name for p in folder.iterdir()) == [
        "N2NSkip-RP-d0.1-s0-allocation=uniform-join=preact.json",
        "N2NSkip-RP-d0.1-s0-join=preact.json",
        "RP-d0.1-s0-allocation=uniform.json",
        "RP-d0.1-s0.json",
    ]
    cell = json.loads((folder / "RP-d0.1-s0-allocation=uniform.json").read_text())
    assert cell["config"]["allocation"] == "uniform" and cell["options"] == {
        "allocation": "uniform"
    }
    assert cell["settings"]["arch"][1]["hidden"] == [64] * 8
    skipped = json.loads((folder / "N2NSkip-RP-d0.1-s0-join=preact.json").read_text())
    assert skipped["config"]["skip_options"] == {"join": "preact"}
    table = (out / "results.md").read_text()
    assert "## mlp-x0.25" in table and "| N2NSkip-RP [allocation=uniform, join=preact] |" in table
    # a subset under its own name: nothing redone, a table of that subset beside the first
    assert main([*args, "--variants", "RP", "--name", "rp-only"]) == 0
    rows = json.loads((out / "rp-only.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["RP", "RP [allocation=uniform]"]
    assert (out / "rp-only-accuracy_vs_density.png").exists()
    assert "N2NSkip" in (out / "results.md").read_text()
    assert main([*args[:-1], "--allocation", "bogus"]) == 2
    # --summary-only: a wider grid summarised from the cells there, none run
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    wider = [*args, "--densities", "0.1", "0.05", "--seeds", "0", "1"]
    wider += ["--name", "partial", "--summary-only"]
    assert main(wider) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    rows = json.loads((out / "partial.json").read_text())["rows"]
    assert {r["density"] for r in rows} == {0.1}
    assert "| RP | " in (table := (out / "partial.md").read_text()) and "(1 seed)" in table
    assert main([*wider[:2], str(tmp_path / "none"), *wider[3:]]) == 2


def test_study_choices_are_the_skip_options_choices():
    from n2nonnx.pruning.allocation import ALLOCATIONS
    from n2nonnx.skip.options import _CHOICES, AUTHORS_VARIANT
    from n2nonnx.study.grid import AUTHORS_OPTIONS, FACTORS

    for name in ("sampling", "join", "placement", "skip_norm", "pool_at"):
        assert set(FACTORS[name].choices) == set(_CHOICES[name]), name
    assert set(FACTORS["allocation"].choices) <= set(ALLOCATIONS)
    _, options = parse_variant(f"N2NSkip-RP:{AUTHORS_OPTIONS}")
    assert options.items() <= AUTHORS_VARIANT.items()
    cell = Cell("vgg1d", "N2NSkip-RP", 0.05, 0, (("allocation", "uniform"), *options.items()))
    assert cell.label == "N2NSkip-RP [authors' code, allocation=uniform]"


def test_delta_predictor_rebuilds_the_cells_models(tmp_path):
    """The predictors are computed on rebuilt untrained models; the binary graph is the
    trained one's (masks are fixed), so dead units and delta equal the cells' own figures."""
    import subprocess
    import sys

    out = tmp_path / "study"
    args = ["study", "--out", str(out), "--arch", "mlp", "--width", "0.25", "--epochs", "1"]
    args += ["--variants", "RP", "N2NSkip-RP", "--allocation", "erk", "uniform"]
    assert main([*args, "--densities", "0.03", "--seeds", "0", "--no-progress"]) == 0
    script = Path(__file__).resolve().parents[1] / "examples" / "delta_predictor.py"
    dump = tmp_path / "predictors.json"
    result = subprocess.run(
        [sys.executable, str(script), str(out), "--min-cells", "4", "--json", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| mlp-x0.25 | 3% | 4 |" in result.stdout
    (group,) = json.loads(dump.read_text())
    cells = {
        (c["label"], c["seed"]): c
        for c in map(json.loads, map(Path.read_text, (out / "cells" / "mlp-x0.25").iterdir()))
    }
    assert len(group["figures"]) == len(cells) == 4
    for accuracy, figures in zip(group["accuracy"], group["figures"], strict=True):
        cell = cells[(figures["label"], figures["seed"])]
        assert accuracy == pytest.approx(100 * cell["onnxruntime_test_accuracy"])
        assert figures["dead_units"] == cell["connectivity"]["dead_units"]
        assert figures["saturation_delta"] == pytest.approx(
            cell["connectivity"]["saturation_delta"]
        )
        assert 0 < figures["live_weights"] <= 1
