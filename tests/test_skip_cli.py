"""The ``n2nonnx skip`` verb and the N2NSkip benchmark example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import n2nonnx
from n2nonnx import masks, metadata
from n2nonnx.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_skip_verb(zoo_models, tmp_path, capsys):
    out = tmp_path / "skip.onnx"
    assert (
        main(["skip", str(zoo_models["vgg"]), "-o", str(out), "--density", "0.1", "--seed", "0"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "skip pairs" in printed and "dropped/merged below" in printed
    model = n2nonnx.load(out)
    record = metadata.stages(model.proto, "n2nskip")[-1]
    assert record["density"] == 0.1 and record["seed"] == 0 and record["pairs"]
    assert any(layer.is_skip and layer.merges_into for layer in model.layers)


def test_skip_verb_options(zoo_models, tmp_path):
    model = n2nonnx.load(zoo_models["mlp"])
    rng = np.random.default_rng(0)
    pruned = masks.apply_masks(
        model,
        {
            layer.weight: (rng.random(layer.weight_shape) < 0.2).astype(np.float32)
            for layer in model.layers
        },
    )
    source = n2nonnx.save(pruned, tmp_path / "pruned.onnx")
    fc1, _, fc3 = (layer.name for layer in model.layers)
    out = tmp_path / "skip.onnx"
    argv = [
        "skip",
        str(source),
        "-o",
        str(out),
        "--pair",
        f"{fc1},{fc3}",
        "--sampling",
        "uniform",
        "--merge",
        "pair",
        "--skip-share",
        "0.3",
        "--seed",
        "4",
    ]
    assert main(argv) == 0
    record = metadata.stages(n2nonnx.load(out).proto, "n2nskip")[-1]
    assert [(p["source"], p["target"]) for p in record["pairs"]] == [(fc1, fc3)]
    assert (record["sampling"], record["merge"], record["skip_share"]) == ("uniform", "pair", 0.3)


def test_skip_verb_user_mistakes(zoo_models, tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    assert main(["skip", str(zoo_models["mlp"]), "-o", out]) == 2  # dense without --density
    assert "density" in capsys.readouterr().err
    assert (
        main(["skip", str(zoo_models["mlp"]), "-o", out, "--density", "0.1", "--skip-share", "1"])
        == 2
    )
    assert "--skip-share" in capsys.readouterr().err  # CLI terms on the CLI
    assert main(["skip", str(zoo_models["mlp"]), "-o", out, "--density", "0.1", "--pair", "a"]) == 2
    assert "SOURCE,TARGET" in capsys.readouterr().err


def test_benchmark_example_quick():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "benchmark_skip.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[1].split() == [
        "model",
        "batch",
        "pairs",
        "pruned",
        "fast",
        "ratio",
        "fast-1x1",
        "ratio",
        "paper",
        "ratio",
    ]
    rows = [line.split() for line in lines[3:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("mlp", "1"),
        ("mlp", "64"),
        ("vgg", "1"),
        ("vgg", "64"),
    ]
    for row in rows:
        pruned, fast, fast_ratio = float(row[3]), float(row[4]), float(row[5])
        # Times are printed with 4 decimals and ratios with 2: allow their rounding.
        rounding = 0.00005 * (1 + fast / pruned) / pruned + 0.005
        assert pruned > 0 and abs(fast / pruned - fast_ratio) <= rounding
