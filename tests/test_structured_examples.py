"""The structured-pruning example scripts at their --quick size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=EXAMPLES.parent,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_snacs_comparison_quick_is_resumable(tmp_path):
    out = run_example("snacs_comparison.py", "--quick", "--out", str(tmp_path))
    rows = [
        line for line in out.splitlines() if line.startswith("| vgg") or line.startswith("| resnet")
    ]
    assert len(rows) == 2 * (1 + 4)
    cells = sorted((tmp_path / "cells").glob("*/*.json"))
    assert len(cells) == 8
    for path in cells:
        cell = json.loads(path.read_text())
        assert "unreachable" in cell or (0 < cell["params_kept"] <= 0.8 and cell["ratio_b1"] > 0)
    stamp = {p: p.stat().st_mtime_ns for p in cells}
    again = run_example("snacs_comparison.py", "--quick", "--out", str(tmp_path))
    assert {p: p.stat().st_mtime_ns for p in cells} == stamp  # finished cells are not redone
    assert again.splitlines()[2:] == out.splitlines()[2:] or len(again.splitlines()) == len(
        out.splitlines()
    )


def test_benchmark_snacs_quick():
    out = run_example("benchmark_snacs.py", "--quick")
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in out.splitlines()
        if line.startswith("| ")
    }
    for step in ("train epoch", "activations", "scores", "constraints", "snacs decision (total)"):
        assert float(rows[step][2]) > 0
