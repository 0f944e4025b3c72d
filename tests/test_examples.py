"""Examples are tests: the scripts in examples/ that no other test runs, at their --quick size."""

from __future__ import annotations

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
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_benchmark_prune_quick():
    out = run_example("benchmark_prune.py", "--quick")
    lines = out.splitlines()
    assert lines[1].split() == ["method", "seconds", "x", "step", "peak", "MiB", "x", "step"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == {"random", "magnitude", "snip", "grasp", "synflow"}
    assert all(float(r[2]) > 0 and float(r[4]) > 0 for r in rows.values())


def test_tune_dense_quick():
    out = run_example("tune_dense.py", "--quick")
    rows = [line for line in out.splitlines() if line.startswith("| mlp |")]
    assert rows and rows[0].startswith("| mlp | study |")
    for row in rows:
        validation, test = row.split("|")[3:5]
        assert 0 < float(validation) <= 100 and 0 < float(test.split("+-")[0]) <= 100


def test_benchmark_align_quick():
    out = run_example("benchmark_align.py", "--quick")
    rows = [
        line.split("|")[1:-1]
        for line in out.splitlines()
        if line.startswith("| ") and "x |" in line
    ]
    assert {row[0].strip() for row in rows} == {"vgg", "resnet"}
    for row in rows:
        assert float(row[3]) > 0 and row[4].strip().endswith("x") and row[6].strip().endswith("x")


def test_benchmark_structured_quick():
    out = run_example("benchmark_structured.py", "--quick", "--percents", "50")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| vgg")]
    assert [r[2].strip() for r in rows] == ["-", "0", "16"]
    aligned = rows[2][4].strip().split("-")
    assert all(int(w) % 16 == 0 for w in aligned)
    assert all(float(r[-1].strip().rstrip("x")) > 0 for r in rows)


def test_benchmark_pad_quick():
    out = run_example("benchmark_pad.py", "--quick")
    assert "load " in out and "padded 3-32-64-64" in out and "unpadded 3-27-62-58" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and float(rows[0][1]) > 0
    assert all(cell.strip().endswith("x") for cell in rows[0][2:])


def test_benchmark_skip_pairs_quick():
    out = run_example("benchmark_skip_pairs.py", "--quick")
    lines = out.splitlines()
    assert lines[0].startswith("load ") and lines[1].split()[:4] == [
        "model",
        "min",
        "pairs",
        "dropped",
    ]
    rows = [line.split() for line in lines[2:]]
    assert {r[0] for r in rows} == {"mlp", "vgg1d", "resnet18"}
    for model in ("mlp", "vgg1d", "resnet18"):
        mine = [r for r in rows if r[0] == model]
        assert [r[1] for r in mine] == ["1", "32", "128"]
        assert len({r[4] for r in mine}) == 1  # the same skip budget for every minimum
        assert int(mine[-1][2]) <= int(mine[0][2])
