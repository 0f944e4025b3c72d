"""Loading and saving: round trips, external data, atomic writes, refusing to lose data."""

from __future__ import annotations

import builders
import numpy as np
import onnx
import pytest

import n2nonnx
from n2nonnx import io as n2io
from n2nonnx.errors import SaveError
from n2nonnx.runtime import make_session, run


def random_feeds(proto: onnx.ModelProto, batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    session = make_session(proto)
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in arg.shape]
        feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


HELPER_MODELS = {
    "gemm_mlp_9": lambda: builders.gemm_mlp(9),
    "gemm_mlp_11": lambda: builders.gemm_mlp(11),
    "conv_net_9": lambda: builders.conv_net(9),
    "conv_net_11": lambda: builders.conv_net(11),
    "left_weight": builders.left_weight_gemm,
    "constant_nodes": builders.constant_node_weights,
}


@pytest.mark.parametrize("name", sorted(HELPER_MODELS))
def test_helper_models_round_trip_exactly(name, tmp_path):
    original = HELPER_MODELS[name]()
    path = n2nonnx.save(n2nonnx.load(original), tmp_path / "out.onnx")
    feeds = random_feeds(original)
    for expected, actual in zip(run(original, feeds), run(str(path), feeds), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_zoo_models_round_trip_exactly(zoo_models, tmp_path):
    """Bit-identical under onnxruntime's basic optimisations (constant folding, no fusions).

    With every fusion on, onnxruntime may fuse a folded graph differently (the
    transformer's attention scale): then the outputs agree to float32 rounding.
    """
    for name, source in zoo_models.items():
        before = source.read_bytes()
        path = n2nonnx.save(n2nonnx.load(source), tmp_path / f"{name}.onnx")
        assert source.read_bytes() == before  # the input is untouched
        feeds = random_feeds(onnx.load(source), batch=7)
        exact = [make_session(str(p), optimization="basic") for p in (source, path)]
        for expected, actual in zip(run(exact[0], feeds), run(exact[1], feeds), strict=True):
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        for expected, actual in zip(run(str(source), feeds), run(str(path), feeds), strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_external_data_load_and_save(tmp_path):
    proto = builders.conv_net(11)
    source = tmp_path / "ext.onnx"
    onnx.save_model(
        builders.conv_net(11),
        source,
        save_as_external_data=True,
        location="ext.weights",
        size_threshold=0,
    )
    assert (tmp_path / "ext.weights").exists()
    model = n2nonnx.load(source)
    assert model.initializer("cw").shape == (4, 2, 3, 3)
    out = n2nonnx.save(model, tmp_path / "copy.onnx", external_data=True)
    assert (tmp_path / "copy.onnx.data").exists()
    assert out.stat().st_size < 5000  # the weights are in the side file
    feeds = random_feeds(proto)
    np.testing.assert_array_equal(run(str(out), feeds)[0], run(proto, feeds)[0])


def test_external_data_chosen_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(n2io, "EXTERNAL_DATA_THRESHOLD", 100)
    out = n2nonnx.save(n2nonnx.load(builders.conv_net(11)), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    reloaded = n2nonnx.load(out)
    assert reloaded.initializer("fw").shape == (5, 64)


def test_missing_external_data_is_a_clear_error(tmp_path):
    source = tmp_path / "ext.onnx"
    onnx.save_model(
        builders.conv_net(11),
        source,
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    (tmp_path / "w.bin").unlink()
    with pytest.raises(n2nonnx.errors.ModelLoadError, match="external data"):
        n2nonnx.load(source)


def test_save_refuses_to_overwrite_its_source(tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(builders.conv_net(11).SerializeToString())
    before = source.read_bytes()
    model = n2nonnx.load(source)
    with pytest.raises(SaveError, match="loaded from"):
        n2nonnx.save(model, source)
    assert source.read_bytes() == before
    n2nonnx.save(model, source, overwrite_source=True)
    assert n2nonnx.load(source).layers


def test_save_leaves_nothing_behind_when_validation_fails(tmp_path):
    model = n2nonnx.load(builders.conv_net(11))
    broken = onnx.ModelProto()
    broken.CopyFrom(model.proto)
    broken.graph.node[0].input[1] = "missing_weight"
    with pytest.raises(SaveError, match="invalid model"):
        n2nonnx.save(broken, tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_model_onnxruntime_cannot_open(tmp_path):
    # valid ONNX (unknown domains pass the checker) that onnxruntime refuses with its Fail type
    value = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2]) for n in "xy"]
    node = onnx.helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    opsets = [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]
    proto = onnx.helper.make_model(
        onnx.helper.make_graph([node], "custom", [value[0]], [value[1]]), opset_imports=opsets
    )
    with pytest.raises(SaveError, match="onnxruntime cannot open: .*Frobnicate"):
        n2nonnx.save(proto, tmp_path / "custom.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(SaveError, match="does not exist"):
        n2nonnx.save(n2nonnx.load(builders.conv_net(11)), tmp_path / "nope" / "m.onnx")


def test_load_accepts_bytes_proto_and_model(tmp_path):
    proto = builders.gemm_mlp(11)
    from_bytes = n2nonnx.load(proto.SerializeToString())
    from_proto = n2nonnx.load(proto)
    from_model = n2nonnx.load(from_proto)
    assert len(from_bytes.layers) == len(from_proto.layers) == len(from_model.layers) == 4
    assert proto.opset_import[0].version == 11  # the caller's proto is not modified


def test_same_input_gives_identical_bytes(tmp_path):
    a = n2nonnx.save(n2nonnx.load(builders.gemm_mlp(9)), tmp_path / "a.onnx")
    b = n2nonnx.save(n2nonnx.load(builders.gemm_mlp(9)), tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()


def test_masks_survive_normalisation():
    from n2nonnx.graph.masking import gate

    proto = builders.conv_net(13)
    mask = np.ones((5, 64), np.float32)
    mask[:, ::2] = 0
    gate(proto.graph, "fw", mask, zero_weight=False)
    model = n2nonnx.load(proto)
    assert any(n.op_type == "Mul" for n in model.proto.graph.node)
    fc_layer = model.layer("fc")
    assert fc_layer.weight == "fw"
    np.testing.assert_array_equal(model.mask("fw"), mask)
    np.testing.assert_array_equal(model.effective_weight(fc_layer)[:, ::2], 0)
    np.testing.assert_array_equal(
        model.effective_weight(fc_layer)[:, 1::2], model.initializer("fw")[:, 1::2]
    )


def test_load_of_a_model_leaves_it_alone(tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(builders.symbolic_spatial().SerializeToString())
    first = n2nonnx.load(source, input_shapes={"x": (1, 3, 8, 8)})
    again = n2nonnx.load(first)
    assert again.proto is not first.proto and again.source == first.source
    assert first.layers[0].spatial_in == (8, 8)


def test_save_never_overwrites_the_sources_external_data(tmp_path):
    from n2nonnx.masks import apply_masks

    source = tmp_path / "a.onnx"
    onnx.save_model(
        builders.conv_net(11),
        source,
        save_as_external_data=True,
        location="b.onnx.data",
        size_threshold=0,
    )
    before = (tmp_path / "b.onnx.data").read_bytes()
    model = n2nonnx.load(source)
    masked = apply_masks(model, {"fw": np.zeros((5, 64), np.float32)})
    with pytest.raises(SaveError, match="holds the weights"):
        n2nonnx.save(masked, tmp_path / "b.onnx", external_data=True)
    assert (tmp_path / "b.onnx.data").read_bytes() == before
    assert not (tmp_path / "b.onnx").exists()
