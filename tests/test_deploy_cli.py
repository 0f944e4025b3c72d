"""``n2nonnx deploy``: writes a verified model; bad input gets one line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json

import numpy as np

import n2nonnx
from n2nonnx.cli import main


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deploy_writes_model_and_json(zoo_models, tmp_path, capsys):
    source = tmp_path / "pruned.onnx"
    n2nonnx.save(n2nonnx.prune(n2nonnx.load(zoo_models["mlp"]), "random", 0.05, seed=0), source)
    before = digest(source)
    out, report = tmp_path / "deployed.onnx", tmp_path / "deploy.json"
    assert (
        main(["deploy", str(source), "-o", str(out), "--weights-fp16", "--json", str(report)]) == 0
    )
    summary = json.loads(report.read_text())
    assert summary["bytes"]["after"] == out.stat().st_size
    assert summary["units"]["removed"] > 0 and "wrote" in capsys.readouterr().out
    assert digest(source) == before


def test_bad_input_paths(zoo_models, tmp_path, capsys):
    source = zoo_models["mlp"]  # no masks: still deploys
    before = digest(source)
    out = tmp_path / "out.onnx"
    assert main(["deploy", str(source), "-o", str(out), "--quantize", "int2"]) == 2
    assert "invalid choice: 'int2'" in capsys.readouterr().err and not out.exists()
    wrong = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(
        wrong,
        x_train=rng.standard_normal((8, 7)).astype(np.float32),
        y_train=np.zeros(8, np.int64),
        x_test=rng.standard_normal((8, 7)).astype(np.float32),
        y_test=np.zeros(8, np.int64),
    )
    assert (
        main(["deploy", str(source), "-o", str(out), "--quantize", "int8", "--data", str(wrong)])
        == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "(7,)" in error and not out.exists()
    assert main(["deploy", str(source), "-o", str(source)]) == 2
    assert "never modifies its inputs" in capsys.readouterr().err
    assert main(["deploy", str(source), "-o", str(out), "--storage", "dense"]) == 0
    assert out.exists() and digest(source) == before
