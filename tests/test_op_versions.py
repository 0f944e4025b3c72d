"""The op registry's schema versions: every registered op covers every ONNX schema version up to
the newest opset (or names the gap), an uncovered version is refused in one line, and the older
semantics the converters implement for old versions run as the ONNX changelog says."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from n2nonnx.backend import OnnxModule, register_op, resolve
from n2nonnx.backend.registry import covered_versions, schema_versions
from n2nonnx.errors import UnsupportedOpError
from n2nonnx.runtime import run

torch.set_num_threads(1)

NEWEST = onnx.defs.onnx_opset_version()

# (op, schema version) no converter implements, with the reason. The coverage test fails when a
# gap appears that is not listed here, and when a listed gap is closed.
KNOWN_GAPS = {
    (
        "Upsample",
        1,
    ): "experimental opset-1 form (height_scale / width_scale attributes); no exporter "
    "emits it and onnxruntime (opset 7+) cannot check it",
    ("Upsample", 10): "deprecated: Upsample was removed at opset 10 (use Resize); onnx.checker and "
    "onnxruntime reject it",
    (
        "Scatter",
        11,
    ): "deprecated: Scatter was removed at opset 11 (use ScatterElements); onnx.checker "
    "and onnxruntime reject it",
}


def _standard_ops() -> dict[str, list[int]]:
    """Registered ops of the default domain (custom test domains have no schemas)."""
    return {op: versions for op, versions in covered_versions().items() if "::" not in op}


def test_every_schema_version_is_covered_or_a_known_gap():
    gaps = set()
    for op, versions in _standard_ops().items():
        gaps |= {(op, v) for v in schema_versions(op) if v <= NEWEST and v not in versions}
    new = sorted(gaps - set(KNOWN_GAPS))
    closed = sorted(set(KNOWN_GAPS) - gaps)
    assert not new, (
        f"schema versions no converter implements (implement them or list them in KNOWN_GAPS): {new}"
    )
    assert not closed, f"KNOWN_GAPS lists versions that are covered now (remove them): {closed}"


def test_declared_versions_are_real_schema_versions():
    wrong = {
        op: [v for v in versions if v <= NEWEST and v not in schema_versions(op)]
        for op, versions in _standard_ops().items()
    }
    assert not {op: bad for op, bad in wrong.items() if bad}


def test_every_standard_op_has_a_schema():
    assert all(schema_versions(op) for op in _standard_ops())


def test_registration_checks_the_declared_versions():
    with pytest.raises(ValueError, match="not schema versions"):
        register_op("Relu", versions=(2,))
    with pytest.raises(ValueError, match="not a schema version"):
        register_op("Relu", since=2, until=13)
    with pytest.raises(ValueError, match="declare the schema versions"):
        register_op("Relu", since=13)
    with pytest.raises(ValueError, match="duplicate"):
        register_op("Relu", versions=(13,))(lambda spec: torch.relu)
    assert covered_versions()["Relu"] == [1, 6, 13, 14]


def test_resolution_uses_the_active_schema_version():
    # Softmax: opsets 1-12 coerce to 2-D, 13 on work along one axis
    assert resolve("Softmax", "", 12) is resolve("Softmax", "", 1)
    assert resolve("Softmax", "", 13) is not resolve("Softmax", "", 12)
    assert resolve("Softmax", "", NEWEST) is resolve("Softmax", "", 13)
    assert resolve("Split", "ai.onnx", 17) is resolve("Split", "", 13)


def _model(
    op: str, inputs: dict[str, np.ndarray], opset: int, outputs: int = 1, name: str = "", **attrs
) -> onnx.ModelProto:
    node = helper.make_node(op, list(inputs), [f"y{i}" for i in range(outputs)], name=name, **attrs)
    graph = helper.make_graph(
        [node],
        "one",
        [
            helper.make_tensor_value_info(
                k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)
            )
            for k, v in inputs.items()
        ],
        [
            helper.make_tensor_value_info(f"y{i}", TensorProto.UNDEFINED, None)
            for i in range(outputs)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ours(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    module = OnnxModule(model).eval()
    with torch.no_grad():
        result = module(*[torch.from_numpy(v) for v in inputs.values()])
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize(
    ("op", "opset", "version", "covered"),
    [
        ("Upsample", 10, 10, "[7, 9]"),
        ("Scatter", 12, 11, "[9]"),
    ],
)
def test_uncovered_version_is_refused_in_one_line(op, opset, version, covered):
    inputs = (
        {"x": np.zeros((1, 1, 2, 2), np.float32), "s": np.ones(4, np.float32)}
        if op == "Upsample"
        else {
            "x": np.zeros((2, 2), np.float32),
            "i": np.zeros((2, 2), np.int64),
            "u": np.ones((2, 2), np.float32),
        }
    )
    with pytest.raises(UnsupportedOpError) as info:
        OnnxModule(_model(op, inputs, opset, name="old7"))
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "'old7'",
        f"op {op}",
        "'ai.onnx'",
        f"opset {opset}",
        f"{op}-{version}",
        "deprecated",
        covered,
        "n2nonnx.backend.supported_ops()",
    ):
        assert part in message, (part, message)


def test_op_older_than_its_first_schema_is_refused():
    with pytest.raises(UnsupportedOpError, match=r"Gelu does not exist before opset 20") as info:
        OnnxModule(_model("Gelu", {"x": np.zeros(3, np.float32)}, 17, name="g"))
    assert "\n" not in str(info.value)


def test_add_6_legacy_broadcast_aligns_at_axis():
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
        rng.standard_normal((3, 4)).astype(np.float32),
    )
    (got,) = _ours(_model("Add", {"a": a, "b": b}, 6, broadcast=1, axis=1), {"a": a, "b": b})
    np.testing.assert_array_equal(got.numpy(), a + b[None, :, :, None])
    (trailing,) = _ours(
        _model("Mul", {"a": a, "b": b[0, :3].copy()}, 6, broadcast=1, axis=-3),
        {"a": a, "b": b[0, :3].copy()},
    )
    np.testing.assert_array_equal(trailing.numpy(), a * b[0, :3][None, :, None, None])


def test_pad_1_reads_paddings():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (got,) = _ours(_model("Pad", {"x": x}, 1, paddings=[0, 1, 1, 2], mode="edge"), {"x": x})
    np.testing.assert_array_equal(got.numpy(), np.pad(x, [(0, 1), (1, 2)], mode="edge"))


def test_tile_1_repeats_one_axis():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    inputs = {"x": x, "t": np.array(3, np.int64), "a": np.array(1, np.int64)}
    (got,) = _ours(_model("Tile", inputs, 1), inputs)
    np.testing.assert_array_equal(got.numpy(), np.tile(x, (1, 3)))


def test_selu_1_uses_its_own_default_constants():
    x = np.array([-2.0, -0.5, 0.5, 2.0], np.float32)
    expected = {1: (1.6732, 1.0507), 6: (1.67326319217681884765625, 1.05070102214813232421875)}
    for opset, (alpha, gamma) in expected.items():
        (got,) = _ours(_model("Selu", {"x": x}, opset), {"x": x})
        want = gamma * np.where(x > 0, x, alpha * np.expm1(x))
        np.testing.assert_allclose(got.numpy(), want.astype(np.float32), rtol=1e-6)
    assert not np.allclose(expected[1], expected[6], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("opset", "mask_type"), [(7, torch.float32), (10, torch.bool), (13, torch.bool)]
)
def test_dropout_mask_type_follows_the_version(opset, mask_type):
    x = np.ones((2, 3), np.float32)
    y, mask = _ours(_model("Dropout", {"x": x}, opset, outputs=2), {"x": x})
    assert torch.equal(y, torch.ones(2, 3))
    assert mask.dtype == mask_type and bool(mask.bool().all())


def test_resize_11_tf_half_pixel_for_nn_matches_onnxruntime():
    x = np.arange(20, dtype=np.float32).reshape(1, 1, 4, 5)
    node = helper.make_node(
        "Resize",
        ["x", "roi", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn",
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array([], np.float32), "roi"),
            numpy_helper.from_array(np.array([1, 1, 1.7, 0.6], np.float32), "scales"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    (got,) = _ours(model, {"x": x})
    np.testing.assert_array_equal(got.numpy(), run(model, {"x": x})[0])


def test_conv_transpose_10_same_upper_matches_onnxruntime():
    rng = np.random.default_rng(1)
    x, w = (
        rng.standard_normal((1, 2, 3, 4)).astype(np.float32),
        rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
    )
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 2])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
        model.ir_version = 8
        (got,) = _ours(model, {"x": x})
        want = run(model, {"x": x})[0]
        assert float(np.abs(got.numpy() - want).max()) <= 1e-5 * float(np.abs(want).max())


def test_mod_28_floor_mode_on_floats():
    a = np.array([0.0, -0.0, 5.5, -5.5, 1.0, -1.0], np.float32)
    b = np.array([-3.0, 3.0, -2.0, 2.0, np.inf, np.inf], np.float32)
    inputs = {"a": a, "b": b}
    (got,) = _ours(_model("Mod", inputs, 28), inputs)
    want = np.array([-0.0, 0.0, -0.5, 0.5, 1.0, np.inf], np.float32)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(np.signbit(got.numpy()), np.signbit(want))


def test_bit_shift_28_signed_and_out_of_range_shifts():
    x = np.array([-5, -5, 5, 96, -128, -5, 7], np.int8)
    shift = np.array([1, 9, 9, 1, 1, -1, 8], np.int8)
    inputs = {"x": x, "s": shift}
    (right,) = _ours(_model("BitShift", inputs, 28, direction="RIGHT"), inputs)
    (left,) = _ours(_model("BitShift", inputs, 28, direction="LEFT"), inputs)
    assert right.tolist() == [-3, -1, 0, 48, -64, -1, 0]
    assert left.tolist() == [-10, 0, 0, -64, 0, 0, 0]
