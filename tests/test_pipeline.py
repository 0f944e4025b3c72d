"""The main job and the study, at a size that runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import n2nonnx
from n2nonnx.cli import main
from n2nonnx.data import resolve_data
from n2nonnx.pipeline import density_figures
from n2nonnx.runtime import accuracy


def test_run_default_writes_a_checked_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(["run", "--out", str(out), "--epochs", "2", "--density", "0.1", "--no-progress"]) == 0
    )
    assert {
        "model.onnx",
        "dense.onnx",
        "results.json",
        "report.md",
        "training.png",
        "connectivity.png",
    } <= {p.name for p in out.iterdir()}
    numbers = json.loads((out / "results.json").read_text())
    saved = n2nonnx.load(out / "model.onnx")
    # The reported densities are those of the saved file.
    achieved = density_figures(saved)
    for key in ("density", "sequential_nonzeros", "skip_nonzeros", "dense_weights"):
        assert numbers[key] == achieved[key]
    assert achieved["skip_layers"] > 0 and achieved["skip_nonzeros"] > 0
    assert abs(numbers["density"] - 0.1) < 2 / numbers["dense_weights"] * len(saved.layers)
    # The reported accuracy is what onnxruntime gives on the saved file.
    data = resolve_data("mnist1d", input_shape=saved.graph_inputs[0].shape)
    assert (
        accuracy(str(out / "model.onnx"), data.x_test.numpy(), data.y_test.numpy())
        == numbers["onnxruntime_test_accuracy"]
    )
    assert abs(numbers["torch_test_accuracy"] - numbers["onnxruntime_test_accuracy"]) < 0.002
    # The reported delta is the saved model's, recomputed here from the file.
    from n2nonnx.connectivity import analyze

    recomputed = analyze(None, n2nonnx.load(out / "model.onnx")).models[0].saturation_delta
    assert numbers["connectivity"]["saturation_delta"] == pytest.approx(
        recomputed, rel=1e-9, abs=1e-12
    )
    assert len(numbers["history"]["epochs"]) == 2
    report = (out / "report.md").read_text()
    assert (
        f"{numbers['onnxruntime_test_accuracy']:.2%}" in report
        and "![connectivity](connectivity.png)" in report
    )
    assert "N2NSkip-CSP" in capsys.readouterr().out
    # What did I gain: three models, each deployed; the reported numbers are the files'.
    gains = numbers["gains"]
    assert list(gains) == ["dense", "CSP", "N2NSkip-CSP"]
    deployed = out / "deployed.onnx"
    assert gains["N2NSkip-CSP"]["deployed_bytes"] == deployed.stat().st_size
    assert (
        accuracy(str(deployed), data.x_test.numpy(), data.y_test.numpy())
        == gains["N2NSkip-CSP"]["test_accuracy"]
    )
    assert (
        gains["N2NSkip-CSP"]["test_accuracy"] == numbers["onnxruntime_test_accuracy"]
    )  # deployment is exact
    assert gains["dense"]["nonzeros"] > 5 * gains["CSP"]["nonzeros"]
    assert gains["CSP"]["deployed_bytes"] < gains["dense"]["deployed_bytes"] / 4
    assert all(row["latency_ms"]["1"] > 0 and row["latency_ms"]["64"] > 0 for row in gains.values())
    assert "## What did I gain" in report and "![gains](gains.png)" in report
    # A second run refuses to replace the report without --force.
    assert main(["run", "--out", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err


def test_run_user_model_and_npz_data(tmp_path, zoo_models):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 40)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    np.savez(
        tmp_path / "data.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:]
    )
    out = tmp_path / "job"
    assert (
        main(
            [
                "run",
                str(zoo_models["mlp"]),
                "--data",
                str(tmp_path / "data.npz"),
                "--method",
                "random",
                "--density",
                "0.2",
                "--skip-share",
                "0",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--no-connectivity",
                "--no-baselines",
            ]
        )
        == 0
    )
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["skip_nonzeros"] == 0 and numbers["label"] == "RP"
    assert "connectivity" not in numbers


def test_run_bad_data_is_a_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 40), np.float32), y_train=np.zeros(4))
    assert (
        main(
            [
                "run",
                "--data",
                str(tmp_path / "bad.npz"),
                "--out",
                str(tmp_path / "o"),
                "--epochs",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "x_test" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_study_runs_resumes_and_summarises(tmp_path, capsys, caplog):
    out = tmp_path / "study"
    args = [
        "study",
        "--out",
        str(out),
        "--arch",
        "mlp",
        "--variants",
        "dense",
        "RP",
        "N2NSkip-RP",
        "--densities",
        "0.1",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    cells = sorted(p.name for p in (out / "cells" / "mlp").iterdir())
    assert cells == [
        "N2NSkip-RP-d0.1-s0.json",
        "N2NSkip-RP-d0.1-s1.json",
        "RP-d0.1-s0.json",
        "RP-d0.1-s1.json",
        "dense-d1-s0.json",
        "dense-d1-s1.json",
    ]
    summary = json.loads((out / "results.json").read_text())
    rows = {(r["variant"], r["density"]): r for r in summary["rows"]}
    cell = json.loads((out / "cells" / "mlp" / "RP-d0.1-s1.json").read_text())
    seeds = [
        json.loads((out / "cells" / "mlp" / f"RP-d0.1-s{s}.json").read_text())[
            "onnxruntime_test_accuracy"
        ]
        for s in (0, 1)
    ]
    assert rows[("RP", 0.1)]["accuracy_mean"] == pytest.approx(100 * np.mean(seeds))
    assert rows[("RP", 0.1)]["accuracy_std"] == pytest.approx(100 * np.std(seeds, ddof=1))
    assert cell["skip_nonzeros"] == 0 and cell["settings"]["recipe"]["epochs"] == 1
    assert (out / "accuracy_vs_density.png").exists() and (out / "delta_vs_density.png").exists()
    table = (out / "results.md").read_text()
    assert "| N2NSkip-RP |" in table and "+-" in table
    capsys.readouterr()
    # Resume: a second run does no cell again.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells" / "mlp").iterdir()}
    caplog.clear()
    assert main(args) == 0
    assert "6 of 6 cells already done" in caplog.text
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "cells" / "mlp").iterdir()}
    # Other settings: the old cells are not reused, and the summary shows only this plan's seeds.
    changed = [
        "study",
        "--out",
        str(out),
        "--arch",
        "mlp",
        "--variants",
        "RP",
        "--densities",
        "0.1",
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--no-progress",
    ]
    assert main(changed) == 0
    redone = json.loads((out / "cells" / "mlp" / "RP-d0.1-s0.json").read_text())
    assert redone["settings"]["recipe"]["epochs"] == 2
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["variant"], r["seeds"]) for r in rows] == [("RP", [0])]


def test_run_refuses_bad_options_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for extra, words in [
        (["--out", str(tmp_path / "file")], "is a file"),
        (["--allocation", "bogus"], "invalid choice: 'bogus'"),
        (["--optimizer", "bogus"], "invalid choice: 'bogus'"),
        (["--density", "2"], "--density: 2 is not in (0, 1]"),
    ]:
        args = ["run", "--epochs", "1", "--no-progress", *extra]
        if "--out" not in extra:
            args += ["--out", str(tmp_path / "o")]
        assert main(args) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the folder was made


def test_job_refuses_skip_options_that_its_fields_set():
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.pipeline.job import JobConfig, validate

    validate(JobConfig(skip_options={"pairs": "all"}))
    for key, value in [("sampling", "uniform"), ("seed", 3), ("density", 0.1)]:
        with pytest.raises(InvalidArgumentError, match=f"skip_options sets {key}.*JobConfig"):
            validate(JobConfig(skip_options={key: value}))


def test_run_dense_report(tmp_path):
    out = tmp_path / "dense"
    assert (
        main(["run", "--method", "dense", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    )
    report = (out / "report.md").read_text()
    assert report.startswith("# n2nonnx: dense at 100.0% density") and "N2NSkip share" not in report


def test_study_runs_scl_variants_at_the_same_epochs(tmp_path):
    out = tmp_path / "study"
    assert (
        main(
            [
                "study",
                "--out",
                str(out),
                "--arch",
                "mlp",
                "--variants",
                "SCL",
                "N2NSkip-SCL",
                "--densities",
                "0.1",
                "--seeds",
                "0",
                "--epochs",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    for variant in ("SCL", "N2NSkip-SCL"):
        cell = json.loads((out / "cells" / "mlp" / f"{variant}-d0.1-s0.json").read_text())
        assert len(cell["history"]["epochs"]) == 2  # search + fine-tuning = the recipe's epochs
        assert cell["density"] == pytest.approx(0.1, abs=2e-4)
    skipped = json.loads((out / "cells" / "mlp" / "N2NSkip-SCL-d0.1-s0.json").read_text())
    assert skipped["skip_split"]["skip_nonzeros"] == skipped["skip_nonzeros"] > 0
