"""deploy(align=, timing=): aligned dead-unit removal, the measured choice, layout warnings."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import n2nonnx
from n2nonnx.cli import main
from n2nonnx.deployment import deploy
from n2nonnx.deployment.align import aligned_removal
from n2nonnx.deployment.choice import _session, layout_warnings, nchwc_block
from n2nonnx.deployment.dead import find_dead_units
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.masks import fold_masks


def pruned(path, density=0.05):
    return n2nonnx.prune(n2nonnx.load(path), "random", density, allocation="global", seed=0)


def check_aligned(model, dead, aligned, align):
    """Every layer keeps a multiple of ``align``, or its exact count when it cannot."""
    for layer in model.layers:
        exact = layer.units - len(dead.remove.get(layer.name, ()))
        kept = layer.units - len(aligned.remove.get(layer.name, ()))
        assert exact <= kept <= layer.units
        rounded = -(-exact // align) * align
        if rounded <= layer.units:
            assert kept % align == 0 or kept == layer.units, (layer.name, exact, kept)
        else:
            assert kept == exact or kept == layer.units, (layer.name, exact, kept)


@pytest.mark.parametrize("name", ["vgg", "resnet", "mlp"])
def test_aligned_removal_keeps_multiples(zoo_models, name):
    folded = fold_masks(pruned(zoo_models[name]))
    dead = find_dead_units(folded)
    for align in (4, 8):
        aligned = aligned_removal(folded, dead, align)
        check_aligned(folded, dead, aligned, align)
        for layer, units in aligned.remove.items():
            assert set(units) <= set(dead.remove[layer])  # only keeps units
    assert aligned_removal(folded, dead, 0) is dead


def test_residual_partners_stay_aligned(zoo_models):
    folded = fold_masks(pruned(zoo_models["resnet"], 0.03))
    dead = find_dead_units(folded)
    aligned = aligned_removal(folded, dead, 4)
    check_aligned(folded, dead, aligned, 4)
    # the units joined at a residual Add go together: joined layers keep equal counts
    counts = {name: len(units) for name, units in aligned.remove.items()}
    shortcut = [n for n in counts if "shortcut" in n]
    for name in shortcut:
        partner = name.split("/shortcut")[0] + "/conv2/Conv"
        assert counts[name] == counts.get(partner), (name, counts)


def test_deploy_aligned_verifies_and_records(zoo_models):
    model = pruned(zoo_models["vgg"])
    result = deploy(model, align=4, timing=False, samples=32)
    record = result.summary["removal"]
    assert result.verification.passed and record["align"] == 4 and not record["measured"]
    assert record["chosen"] in ("aligned", "exact")  # "exact" when aligning changes nothing
    for full, kept in record["widths"][record["chosen"]].values():
        assert kept % 4 == 0 or kept == full or -(-kept // 4) * 4 > full
    assert "unit removal       " + record["chosen"] in result.format()


def test_align_0_is_the_exact_removal(zoo_models):
    model = pruned(zoo_models["resnet"])
    result = deploy(model, align=0, timing=False, samples=32)
    dead = find_dead_units(fold_masks(model))
    assert result.summary["units"]["per_layer"] == {k: len(v) for k, v in dead.remove.items()}
    assert result.summary["removal"]["chosen"] == "exact"
    assert set(result.summary["removal"]["removed"]) == {"exact", "none"}


def test_timing_choice_is_recorded(zoo_models, tmp_path, capsys):
    source = tmp_path / "pruned.onnx"
    n2nonnx.save(pruned(zoo_models["vgg"]), source)
    out, report = tmp_path / "deployed.onnx", tmp_path / "deploy.json"
    assert (
        main(["deploy", str(source), "-o", str(out), "--samples", "16", "--json", str(report)]) == 0
    )
    record = json.loads(report.read_text())["removal"]
    assert record["measured"] and record["align"] == 16
    assert record["ratios"]["none"] == 1.0 and record["chosen"] in record["ratios"]
    assert set(record["ratios"]) == set(record["removed"])
    assert all(r > 0 for r in record["ratios"].values()) and "ratio to no removal" in (
        capsys.readouterr().out
    )
    assert json.loads(report.read_text())["units"]["removed"] == record["removed"][record["chosen"]]


@pytest.mark.parametrize(
    ("value", "words"), [("-1", "is not >= 0"), ("x", "not an integer"), ("1.5", "not an integer")]
)
def test_bad_align_is_bad_input(zoo_models, tmp_path, capsys, value, words):
    out = tmp_path / "out.onnx"
    assert main(["deploy", str(zoo_models["mlp"]), "-o", str(out), "--align", value]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "error:" in err[0] and words in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("align", [-1, 1.5, "16", True])
def test_bad_align_in_the_api(zoo_models, align):
    with pytest.raises(InvalidArgumentError, match="align"):
        deploy(n2nonnx.load(zoo_models["mlp"]), align=align)


def _two_convs(channels: int):
    """x (1, 16, 8, 8) -> Conv 16 -> channels -> Relu -> Conv channels -> 16."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("a", (channels, 16, 3, 3)), ("b", (16, channels, 3, 3)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "a"], ["h"], pads=[1] * 4, name="first"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "b"], ["y"], pads=[1] * 4, name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_layout_warning_names_the_unblocked_conv():
    block = nchwc_block()
    if block is None:
        pytest.skip("this onnxruntime build has no NCHWc kernels here")
    with tempfile.TemporaryDirectory() as scratch:
        warned, clean = Path(scratch) / "warned.onnx", Path(scratch) / "clean.onnx"
        _session(_two_convs(block + 3), warned)  # odd and above the block: a generic kernel
        _session(_two_convs(2 * block), clean)
        (line,) = layout_warnings(warned, block)
        assert f"second ({block + 3} input channels)" in line and "reorder" in line
        assert layout_warnings(clean, block) == []
