"""Bad input: one readable error naming the cause and the fix; exit 2 from the CLI; nothing lost."""

from __future__ import annotations

import builders
import pytest

import n2nonnx
from n2nonnx import errors
from n2nonnx.cli import main


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def bad_inputs(tmp_path, zoo_models):
    real = zoo_models["mlp"].read_bytes()
    return {
        "missing": (tmp_path / "nope.onnx", errors.ModelLoadError, "no such file"),
        "folder": (tmp_path, errors.ModelLoadError, "is a folder"),
        "not_onnx": (
            write(tmp_path, "text.onnx", b"hello, I am not a model\n" * 20),
            errors.ModelLoadError,
            "not an ONNX model",
        ),
        "empty": (write(tmp_path, "empty.onnx", b""), errors.ModelLoadError, "empty"),
        "truncated": (
            write(tmp_path, "cut.onnx", real[: len(real) // 2]),
            errors.ModelLoadError,
            "truncated",
        ),
        "dangling": (
            write(tmp_path, "dangling.onnx", builders.dangling_input().SerializeToString()),
            errors.InvalidModelError,
            "not valid ONNX",
        ),
        "custom_domain": (
            write(
                tmp_path, "custom.onnx", builders.custom_domain_before_layer().SerializeToString()
            ),
            errors.UnsupportedOpError,
            "com.example",
        ),
        "no_layers": (
            write(tmp_path, "relu.onnx", builders.no_layers().SerializeToString()),
            errors.NoPrunableLayerError,
            "no prunable layer",
        ),
        "symbolic": (
            write(tmp_path, "sym.onnx", builders.symbolic_spatial().SerializeToString()),
            errors.ShapeError,
            "--input-shape",
        ),
    }


CASES = [
    "missing",
    "folder",
    "not_onnx",
    "empty",
    "truncated",
    "dangling",
    "custom_domain",
    "no_layers",
    "symbolic",
]


@pytest.mark.parametrize("case", CASES)
def test_api_raises_one_clear_error(case, tmp_path, zoo_models):
    path, kind, words = bad_inputs(tmp_path, zoo_models)[case]
    with pytest.raises(kind) as caught:
        n2nonnx.load(path)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert isinstance(caught.value, errors.N2NError)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, zoo_models):
    """``n2nonnx inspect`` on every bad input, in a real subprocess (an uncaught exception
    prints its traceback on that process's stderr, where the tests can see it)."""
    from test_hostile import run_group

    tmp_path = tmp_path_factory.mktemp("errors")
    inputs = bad_inputs(tmp_path, zoo_models)
    before = {
        case: path.read_bytes() if path.is_file() else None for case, (path, _, _) in inputs.items()
    }
    listing = sorted(p.name for p in tmp_path.iterdir())
    results = run_group(
        {case: {"argv": ["inspect", str(path)]} for case, (path, _, _) in inputs.items()}
    )
    after = {
        case: path.read_bytes() if path.is_file() else None for case, (path, _, _) in inputs.items()
    }
    return inputs, results, before == after, listing == sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("case", CASES)
def test_cli_exits_2_without_traceback(case, cli_results):
    inputs, results, unchanged, same_files = cli_results
    _, _, words = inputs[case]
    result = results[case]
    assert result["escaped"] is None and "Traceback" not in result["err"], result["err"]
    assert result["code"] == 2
    assert result["err"].startswith("n2nonnx inspect: error: ") and words in result["err"]
    assert result["err"].count("\n") == 1
    assert result["out"] == ""
    assert unchanged and same_files


def test_old_opset_is_refused():
    proto = builders.no_layers()
    proto.opset_import[0].version = 6
    with pytest.raises(errors.UnsupportedOpError, match="opset 6"):
        n2nonnx.load(proto, analyze=False)


def test_bad_input_shape_option(zoo_models, capsys):
    assert main(["inspect", str(zoo_models["mlp"]), "--input-shape", "x=1xbanana"]) == 2
    assert "NAME=DIMS" in capsys.readouterr().err
    assert main(["inspect", str(zoo_models["mlp"]), "--input-shape", "y=1x40"]) == 2
    assert "inputs are ['x']" in capsys.readouterr().err
