"""The command line: inspect's table and JSON, run's default job, the PyTorch bridge command."""

from __future__ import annotations

import json
import subprocess
import sys

import builders
import onnx
import pytest

from n2nonnx.cli import VERBS, build_parser, main


def rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    return [line.split() for line in lines[2 : lines.index("")]]


def test_inspect_table_vgg(zoo_models, capsys):
    assert main(["inspect", str(zoo_models["vgg"])]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert [r[2] for r in table] == ["Conv"] * 4 + ["Gemm"] * 2
    assert [r[3] for r in table] == [
        "8x3x3x3",
        "8x8x3x3",
        "16x8x3x3",
        "16x16x3x3",
        "32x256",
        "10x32",
    ]
    assert [r[5] for r in table] == ["8", "8", "16", "16", "32", "10"]
    assert table[2][6:9] == ["8x8", "->", "8x8"] and table[0][6:9] == ["16x16", "->", "16x16"]
    assert table[-1][-1] == "output:y"
    assert "prunable parameters: 12,760" in out  # 216+576+1152+2304+8192+320


def test_inspect_table_resnet_marks_residual_feeds(zoo_models, capsys):
    assert main(["inspect", str(zoo_models["resnet"])]) == 0
    out = capsys.readouterr().out
    stem = rows(out)[0]
    assert stem[3] == "8x3x3x3" and "(+)" in " ".join(stem[9:])


def test_inspect_json_schema(zoo_models, capsys):
    for name, path in zoo_models.items():
        assert main(["inspect", str(path), "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["schema"] == "n2nonnx.inspect/1", name
        layers = document["layers"]
        assert document["totals"]["layers"] == len(layers)
        assert document["totals"]["prunable_parameters"] == sum(
            layer["parameters"] for layer in layers
        )
        assert document["totals"]["parameters"] >= document["totals"]["prunable_parameters"]
        assert all(layer["density"] == 1.0 and not layer["masked"] for layer in layers)
        assert {"name", "op", "weight", "units", "spatial_in", "feeds", "depth"} <= set(layers[0])


def test_inspect_with_input_shape(tmp_path, capsys):
    path = tmp_path / "sym.onnx"
    path.write_bytes(builders.symbolic_spatial().SerializeToString())
    assert main(["inspect", str(path), "--input-shape", "x=1x3x20x24"]) == 0
    assert rows(capsys.readouterr().out)[0][6:9] == ["20x24", "->", "20x24"]


def test_pytorch_bridge_command(tmp_path):
    out = tmp_path / "vgg.onnx"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "converters.pytorch",
            "n2nonnx.zoo:vgg1d",
            "--input-shape",
            "1x1x40",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "max |torch - onnxruntime|" in result.stdout
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(out).graph.node)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "converters.pytorch",
            "nope:thing",
            "--input-shape",
            "1x4",
            "-o",
            str(tmp_path / "x.onnx"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "cannot import" in bad.stderr and "Traceback" not in bad.stderr
    command = [sys.executable, "-m", "converters.pytorch", "n2nonnx.zoo:vgg1d"]
    command += ["--input-shape", "1x1x40", "-o", str(out)]
    before = out.read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--force" in again.stderr and out.read_bytes() == before
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, check=False)
    assert forced.returncode == 0, forced.stderr


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_everywhere(verb, capsys):
    assert main([*([verb] if verb else []), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: n2nonnx{' ' + verb if verb else ''}")
    if verb:  # every option explains itself
        subparsers = next(a for a in build_parser(verb)._actions if a.dest == "verb")
        actions = subparsers.choices[verb]._actions
        assert all(action.help for action in actions), [a.dest for a in actions if not a.help]


def test_help_starts_without_heavy_imports():
    """One real process per verb's help: none imports torch, onnx, onnxruntime or numpy."""
    probe = (
        "import sys\n"
        "from n2nonnx.cli import VERBS, main\n"
        "heavy = ('torch', 'onnx', 'onnxruntime', 'numpy', 'scipy', 'matplotlib')\n"
        "for verb in [None, *VERBS]:\n"
        "    try:\n"
        "        main([verb, '--help'] if verb else ['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_usage_errors_are_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "n2nonnx", "prune", "m.onnx", "--density", "1.5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--density: 1.5 is not in (0, 1]" in result.stderr
