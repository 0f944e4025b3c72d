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
    chosen = numbers["deployed"]["label"]
    assert chosen in ("CSP", "N2NSkip-CSP")  # the dense baseline is the reference
    assert gains[chosen]["deployed_bytes"] == deployed.stat().st_size
    assert (
        accuracy(str(deployed), data.x_test.numpy(), data.y_test.numpy())
        == gains[chosen]["test_accuracy"]
    )
    assert (
        gains["N2NSkip-CSP"]["test_accuracy"] == numbers["onnxruntime_test_accuracy"]
    )  # deployment is exact
    assert gains["dense"]["nonzeros"] > 5 * gains["CSP"]["nonzeros"]
    assert gains["CSP"]["deployed_bytes"] < gains["dense"]["deployed_bytes"] / 4
    assert all(row["latency_ms"]["1"] > 0 and row["latency_ms"]["64"] > 0 for row in gains.values())
    assert "## What did I gain" in report and "![gains](gains.png)" in report
    assert report.index("## Verdict") < report.index("## What did I gain")
    assert "untrained" in report and "**CSP**: SNIP" in report
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


def _small_npz(path):
    """A small 10-class data set that fits the built-in MLP (40 features)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 40)).astype(np.float32)
    y = np.argmax(x[:, :10], axis=1).astype(np.int64)
    np.savez(path, x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    return str(path)


FAST_RUN = ["--epochs", "1", "--no-progress", "--no-connectivity", "--no-baselines"]


def test_run_deploys_to_every_installed_target(tmp_path, capsys):
    import importlib.util

    from n2nonnx.pipeline.targets import tensorrt_missing

    out = tmp_path / "job"
    data = _small_npz(tmp_path / "data.npz")
    assert main(["run", "--data", data, "--out", str(out), *FAST_RUN]) == 0
    targets = json.loads((out / "results.json").read_text())["targets"]
    rows = targets["rows"]
    installed = ["onnxruntime", "ort-mobile"]
    installed += ["tensorrt"] if tensorrt_missing() is None else []
    installed += ["mnn"] if importlib.util.find_spec("MNN") is not None else []
    assert list(rows) == [n for n in ("onnxruntime", "ort-mobile", "tensorrt", "mnn") if n in rows]
    assert [name for name, row in rows.items() if row["status"] == "ok"] == installed
    report = (out / "report.md").read_text()
    for name in installed:
        row = rows[name]
        assert (out / row["file"]).stat().st_size == row["bytes"] > 0
        assert all(
            row["latency_ms"][b] > 0 and row["latency_ratio_to_dense"][b] > 0 for b in ("1", "64")
        )
        assert row["verification"]["top1_agreement"] == 1.0
        assert f"| {name} | `{row['file']}` |" in report
    assert rows["onnxruntime"]["file"] == "deployed.onnx"
    assert (out / "deployed.required_operators.config").exists()
    if tensorrt_missing() is not None:
        assert rows["tensorrt"]["status"] == "not available here"
        assert "| tensorrt | not available here: " in report
    assert targets["dense"]["bytes"] > rows["onnxruntime"]["bytes"]
    assert {targets["fastest"][b]["target"] for b in ("1", "64")} <= set(installed)
    assert "### On each deployment target" in report and "Fastest: at batch 1 **" in report
    assert "target ort-mobile" in capsys.readouterr().out


def test_run_targets_choose_and_a_failing_target_is_a_row(tmp_path, monkeypatch):
    pytest.importorskip("MNN")
    from n2nonnx.deployment.targets import mnn
    from n2nonnx.errors import WorkFailedError

    def refuse(source, target):
        raise WorkFailedError("MNN's converter could not convert the deployed model\nmore")

    monkeypatch.setattr(mnn, "convert", refuse)
    data = _small_npz(tmp_path / "data.npz")
    out = tmp_path / "two"
    args = ["run", "--data", data, *FAST_RUN, "--targets", "onnxruntime", "mnn", "--out"]
    assert main([*args, str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["targets"]["rows"]
    assert list(rows) == ["onnxruntime", "mnn"]
    assert rows["mnn"]["status"] == "failed"
    assert rows["mnn"]["reason"] == "MNN's converter could not convert the deployed model"
    assert not (out / "deployed.mnn").exists()
    assert "| mnn | failed: MNN's converter could not" in (out / "report.md").read_text()
    # --targets onnxruntime: today's files, one row.
    out = tmp_path / "one"
    assert (
        main(["run", "--data", data, *FAST_RUN, "--targets", "onnxruntime", "--out", str(out)]) == 0
    )
    rows = json.loads((out / "results.json").read_text())["targets"]["rows"]
    assert list(rows) == ["onnxruntime"] and rows["onnxruntime"]["latency_ms"]["1"] > 0
    assert not {"deployed.ort", "deployed.mnn"} & {p.name for p in out.iterdir()}
    table = (out / "report.md").read_text().split("### On each deployment target")[1]
    assert sum(line.startswith("| onnxruntime |") for line in table.splitlines()) == 1
    assert "| ort-mobile |" not in table and "| mnn |" not in table


def test_run_refuses_an_unknown_target_before_any_work(tmp_path, capsys, monkeypatch):
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.pipeline import JobConfig, run_job
    from n2nonnx.pipeline import run as run_module
    from n2nonnx.pipeline.targets import tensorrt_missing

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the targets were checked")

    monkeypatch.setattr(run_module, "sparsify", no_training)
    with pytest.raises(InvalidArgumentError, match="unknown target 'bogus'"):
        run_job(None, "mnist1d", JobConfig(), tmp_path / "api", targets=["bogus"])
    cases = [["onnxruntime", "bogus"]]
    if tensorrt_missing() is not None:
        cases.append(["tensorrt"])
    for names in cases:
        out = tmp_path / "o"
        assert main(["run", *FAST_RUN, "--out", str(out), "--targets", *names]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and ("bogus" in errors[0] or "not available here" in errors[0])
        assert not out.exists()


RUN_WITH_BASELINES = ["--epochs", "1", "--no-progress", "--no-connectivity"]


def _verdict(report):
    return report.split("## Verdict")[1].split("## What did I gain")[0]


def test_run_verdict_names_a_winner_per_criterion_and_deploy_pruned(tmp_path):
    data = _small_npz(tmp_path / "data.npz")
    out = tmp_path / "pruned"
    args = ["run", "--data", data, *RUN_WITH_BASELINES, "--targets", "onnxruntime"]
    assert main([*args, "--deploy", "pruned", "--out", str(out)]) == 0
    numbers = json.loads((out / "results.json").read_text())
    gains = numbers["gains"]
    assert numbers["deployed"]["label"] == "CSP"
    assert (out / "deployed.onnx").stat().st_size == gains["CSP"]["deployed_bytes"]
    verdict = _verdict((out / "report.md").read_text())
    top = max(gains, key=lambda label: gains[label]["test_accuracy"])
    smallest = min(gains, key=lambda label: gains[label]["deployed_bytes"])
    assert f"- **Accuracy: {top}**" in verdict and f"- **Size: {smallest}**" in verdict
    assert "- **Latency:** at batch 1 " in verdict and "at batch 64 " in verdict
    assert "- **Deployed (`deployed.onnx`): CSP**, `--deploy` asked for it" in verdict
    assert "Trained with one seed (0)" in verdict and "unknown" in verdict
    assert "| **CSP** (deployed) |" in (out / "report.md").read_text()
    for row in gains.values():  # a ratio within the timing noise reads "same as dense"
        for ratio in row.get("latency_ratio", {}).values():
            if abs(ratio - 1) <= 0.05 and row is not gains["dense"]:
                assert "same as dense" in (out / "report.md").read_text()
    # --no-deploy keeps the baselines: compared on accuracy and non-zeros, not timed.
    out = tmp_path / "undeployed"
    assert main(["run", "--data", data, *RUN_WITH_BASELINES, "--no-deploy", "--out", str(out)]) == 0
    numbers = json.loads((out / "results.json").read_text())
    assert list(numbers["comparison"]) == ["dense", "CSP", "N2NSkip-CSP"]
    assert not (out / "deployed.onnx").exists()
    report = (out / "report.md").read_text()
    assert "- **Latency:** not measured" in _verdict(report)
    assert "non-zero weights (trained model)" in report


def test_run_default_deploys_the_best_by_validation_accuracy(tmp_path):
    from n2nonnx.pipeline.verdict import split_validation

    data = _small_npz(tmp_path / "data.npz")
    out = tmp_path / "best"
    args = ["run", "--data", data, *RUN_WITH_BASELINES, "--targets", "onnxruntime"]
    assert main([*args, "--out", str(out)]) == 0
    numbers = json.loads((out / "results.json").read_text())
    gains = numbers["gains"]
    # The validation part is drawn from the training split with the seed; the test split is untouched.
    full = resolve_data(data)
    fit, validation = split_validation(full, 0)
    assert len(fit.x_train) + len(validation.x) == len(full.x_train) == 128
    assert numbers["validation"]["samples"] == len(validation.x)
    assert f"{len(fit.x_train)} train / {len(full.x_test)} test" in numbers["data"]
    sparse = {label: gains[label]["validation_accuracy"] for label in ("CSP", "N2NSkip-CSP")}
    chosen = numbers["deployed"]["label"]
    assert sparse[chosen] == max(sparse.values())
    # deployed.onnx is the chosen model: its validation accuracy is the one recorded.
    assert (
        accuracy(str(out / "deployed.onnx"), validation.x.numpy(), validation.y.numpy())
        == sparse[chosen]
    )
    assert "the highest validation accuracy of the sparse models" in numbers["deployed"]["why"]


def test_choose_deployed_and_the_seed_noise():
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.pipeline.verdict import choose_deployed, deploy_label, verdict_lines

    sparse = ["RP", "N2NSkip-RP"]
    assert choose_deployed(sparse, {"RP": 0.6, "N2NSkip-RP": 0.5}, None, "N2NSkip-RP")[0] == "RP"
    label, why = choose_deployed(sparse, {"RP": 0.5, "N2NSkip-RP": 0.5}, None, "N2NSkip-RP")
    assert label == "N2NSkip-RP" and "tied" in why
    assert choose_deployed(sparse, {"RP": 0.6, "N2NSkip-RP": 0.5}, "N2NSkip-RP", "N2NSkip-RP")[
        1
    ].startswith("`--deploy` asked for it (validation accuracy 50.00%; RP has 60.00%)")
    with pytest.raises(InvalidArgumentError, match="--deploy pruned"):
        deploy_label("pruned", {"n2nskip": "N2NSkip-RP", "pruned": None})
    rows = {
        "dense": {"test_accuracy": 0.60, "nonzeros": 1000},
        "RP": {"test_accuracy": 0.40, "nonzeros": 50},
        "N2NSkip-RP": {"test_accuracy": 0.38, "nonzeros": 49},
    }
    per_seed = {"dense": [0.59, 0.60, 0.61], "RP": [0.39, 0.40, 0.41], "N2NSkip-RP": [0.38] * 3}
    text = "\n".join(verdict_lines(rows, seeds=[0, 1, 2], per_seed=per_seed))
    assert "- **Accuracy: dense** (60.00% test accuracy, 20.0 points above RP" in text
    assert "larger than the seed-to-seed noise" in text and "1.6 points" in text
    assert "- **Size: N2NSkip-RP** (49 non-zero weights" in text
    close = {**per_seed, "dense": [0.2, 0.6, 1.0]}
    assert "within the seed-to-seed noise" in "\n".join(
        verdict_lines(rows, seeds=[0, 1, 2], per_seed=close)
    )
