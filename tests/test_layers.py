"""The layer view on models whose structure is known by construction."""

from __future__ import annotations

import builders
import numpy as np
import pytest

import n2nonnx


def by_weight(model: n2nonnx.Model) -> dict[str, n2nonnx.graph.Layer]:
    return {layer.weight: layer for layer in model.layers}


def targets(layer) -> set[str]:
    return {edge.target for edge in layer.feeds}


def test_mlp(zoo_models):
    model = n2nonnx.load(zoo_models["mlp"])
    layers = by_weight(model)
    assert [layer.weight for layer in model.layers] == ["0.weight", "2.weight", "4.weight"]
    first, second, last = (layers[w] for w in ["0.weight", "2.weight", "4.weight"])
    assert (first.op, first.weight_shape, first.units, first.in_units, first.fan_in) == (
        "Gemm",
        (32, 40),
        32,
        40,
        40,
    )
    assert (first.unit_axis, first.in_axis) == (0, 1)
    assert first.bias == "0.bias" and first.chain == ("Relu",)
    assert (second.units, second.in_units, last.units) == (24, 32, 10)
    assert [layer.depth for layer in model.layers] == [1, 2, 3]
    assert targets(first) == {second.name} and targets(last) == {"output:y"}
    assert [e.source for e in first.fed_by] == ["input:x"]
    np.testing.assert_array_equal(first.feeds[0].unit_map, np.arange(32))
    assert first.spatial_in == () and first.spatial_out == ()


def test_vgg_flatten_maps_channels_to_features(zoo_models):
    model = n2nonnx.load(zoo_models["vgg"])
    convs = [layer for layer in model.layers if layer.op == "Conv"]
    fcs = [layer for layer in model.layers if layer.op == "Gemm"]
    assert [c.weight_shape for c in convs] == [
        (8, 3, 3, 3),
        (8, 8, 3, 3),
        (16, 8, 3, 3),
        (16, 16, 3, 3),
    ]
    assert [c.spatial_in for c in convs] == [(16, 16), (16, 16), (8, 8), (8, 8)]
    assert all(c.chain == ("BatchNormalization", "Relu") for c in convs)
    assert [f.weight_shape for f in fcs] == [(32, 256), (10, 32)]
    assert fcs[1].chain == () and fcs[0].chain == ("Relu",)  # eval export drops Dropout
    edge = convs[-1].feeds[0]
    assert edge.target == fcs[0].name and edge.via == (
        "BatchNormalization",
        "Relu",
        "MaxPool",
        "Flatten",
    )
    # 16 channels x (4 x 4) positions, channel-major: the map repeats each channel 16 times.
    np.testing.assert_array_equal(edge.unit_map, np.repeat(np.arange(16), 16))
    assert convs[1].feeds[0].via == ("BatchNormalization", "Relu", "MaxPool")
    assert [layer.depth for layer in model.layers] == [1, 2, 3, 4, 5, 6]


def test_resnet_residual_and_strided_shortcut(zoo_models):
    model = n2nonnx.load(zoo_models["resnet"])
    layers = by_weight(model)
    assert len(model.layers) == 7  # stem, 2 convs per block x 2 blocks, 1 shortcut, fc
    shortcut = layers["4.shortcut.0.weight"]
    assert shortcut.weight_shape == (16, 8, 1, 1)
    assert (shortcut.spatial_in, shortcut.spatial_out) == ((16, 16), (8, 8))
    assert shortcut.chain == ("BatchNormalization",)
    stem, conv2 = layers["0.weight"], layers["3.conv2.weight"]
    block2 = {layers["4.conv1.weight"].name, shortcut.name}
    # The stem reaches block 1 directly and block 2 through the identity shortcut's Add.
    assert targets(stem) == {layers["3.conv1.weight"].name} | block2
    assert targets(conv2) == block2
    assert all("Add" in e.via for e in conv2.feeds)
    fc = layers["7.weight"]
    assert {e.source for e in fc.fed_by} == {layers["4.conv2.weight"].name, shortcut.name}
    assert all(e.via[-2:] == ("GlobalAveragePool", "Flatten") for e in fc.fed_by)
    # The shortcut and conv1 of block 2 sit at the same depth; conv2 of block 2 one deeper.
    assert shortcut.depth == layers["4.conv1.weight"].depth == layers["4.conv2.weight"].depth - 1


def test_densenet_concat_offsets(zoo_models):
    model = n2nonnx.load(zoo_models["densenet"])
    stem, d1, d2, d3, fc = model.layers
    assert [d.in_units for d in (d1, d2, d3)] == [8, 12, 16] and fc.in_units == 20
    maps = {(e.source, e.target): e.unit_map for layer in model.layers for e in layer.feeds}
    np.testing.assert_array_equal(maps[(d1.name, d2.name)], [-1] * 8 + [0, 1, 2, 3])
    np.testing.assert_array_equal(maps[(d1.name, d3.name)], [-1] * 8 + [0, 1, 2, 3] + [-1] * 4)
    np.testing.assert_array_equal(maps[(stem.name, d3.name)], list(range(8)) + [-1] * 8)
    np.testing.assert_array_equal(maps[(d3.name, fc.name)], [-1] * 16 + [0, 1, 2, 3])
    assert targets(stem) == {d1.name, d2.name, d3.name, fc.name}
    assert [layer.depth for layer in model.layers] == [1, 2, 3, 4, 5]


def test_mobilenet_depthwise_and_grouped(zoo_models):
    model = n2nonnx.load(zoo_models["mobilenet"])
    convs = [layer for layer in model.layers if layer.op == "Conv"]
    depthwise = [c for c in convs if c.groups > 1 and c.groups == c.units]
    grouped = [c for c in convs if 1 < c.groups < c.units]
    assert len(depthwise) == 2 and len(grouped) == 1
    assert depthwise[0].weight_shape == (16, 1, 3, 3) and depthwise[0].in_units == 16
    assert depthwise[0].fan_in == 9
    assert (
        grouped[0].weight_shape == (32, 8, 3, 3)
        and grouped[0].in_units == 32
        and grouped[0].fan_in == 72
    )
    assert convs[0].chain == ("BatchNormalization", "HardSwish")
    assert convs[0].spatial_out == (8, 8)


def test_transformer_matmul_weights(zoo_models):
    model = n2nonnx.load(zoo_models["transformer"])
    layers = by_weight(model)
    shapes = sorted((layer.op, layer.weight_shape) for layer in model.layers)
    assert shapes == sorted(
        [
            ("MatMul", (8, 32)),
            ("MatMul", (32, 96)),
            ("Gemm", (32, 32)),
            ("MatMul", (32, 64)),
            ("MatMul", (64, 32)),
            ("Gemm", (10, 32)),
        ]
    )
    ff1 = next(layer for layer in model.layers if layer.weight_shape == (32, 64))
    assert (ff1.unit_axis, ff1.in_axis, ff1.units, ff1.in_units) == (1, 0, 64, 32)
    assert ff1.bias is not None and ff1.chain == ("Relu",) and ff1.spatial_in == (6,)
    ff2 = next(layer for layer in model.layers if layer.weight_shape == (64, 32))
    assert targets(ff1) == {ff2.name}
    head = layers["head.weight"]
    assert ff2.name in {e.source for e in head.fed_by}


@pytest.mark.parametrize("opset", [9, 11])
def test_helper_mlp_old_opsets(opset):
    model = n2nonnx.load(builders.gemm_mlp(opset))
    assert model.opset == 13  # upgraded for analysis
    layers = by_weight(model)
    fc1, fc2, proj, fc3 = layers["w1"], layers["w2"], layers["wp"], layers["w3"]
    assert (fc1.units, fc1.in_units, fc1.unit_axis) == (16, 12, 0)
    assert (fc2.units, fc2.in_units, fc2.unit_axis) == (8, 16, 1)
    assert fc1.chain == ("BatchNormalization", "Relu", "Dropout")
    assert targets(fc1) == {fc2.name, proj.name}
    assert {e.source for e in fc3.fed_by} == {fc2.name, proj.name}
    assert all(e.via[-1] == "Sum" for e in fc3.fed_by)
    assert (fc3.op, fc3.bias, fc3.preact) == ("MatMul", "b3", "y")


@pytest.mark.parametrize("opset", [9, 11])
def test_helper_conv_old_opsets(opset):
    model = n2nonnx.load(builders.conv_net(opset))
    conv, fc = model.layers
    assert (conv.units, conv.in_units, conv.spatial_in, conv.spatial_out) == (4, 2, (8, 8), (8, 8))
    assert conv.chain == ("BatchNormalization", "Relu")
    np.testing.assert_array_equal(conv.feeds[0].unit_map, np.repeat(np.arange(4), 16))
    assert (fc.units, fc.in_units) == (5, 64)


def test_weight_on_the_left():
    model = n2nonnx.load(builders.left_weight_gemm())
    first, second = model.layers
    assert (first.op, first.unit_axis, first.in_axis, first.units, first.in_units) == (
        "Gemm",
        1,
        0,
        10,
        6,
    )
    assert (first.in_feature_axis, first.out_feature_axis) == (0, 0)
    assert (second.op, second.unit_axis, second.units, second.in_units) == ("MatMul", 0, 3, 10)
    np.testing.assert_array_equal(first.feeds[0].unit_map, np.arange(10))


def test_constant_node_weights_become_initializers():
    model = n2nonnx.load(builders.constant_node_weights())
    ops = [n.op_type for n in model.proto.graph.node]
    assert "Constant" not in ops and "Transpose" not in ops and "Cast" not in ops
    conv, fc = model.layers
    assert conv.weight in model.initializer_names and fc.weight in model.initializer_names
    assert model.initializer(fc.weight).shape == (48, 8)
    assert model.initializer(fc.weight).dtype == np.float32
    np.testing.assert_array_equal(fc.fed_by[0].unit_map, np.repeat(np.arange(3), 16))


def test_symbolic_spatial_needs_input_shapes():
    with pytest.raises(n2nonnx.errors.ShapeError, match="--input-shape"):
        n2nonnx.load(builders.symbolic_spatial())
    model = n2nonnx.load(builders.symbolic_spatial(), input_shapes={"x": (1, 3, 10, 12)})
    assert model.layers[0].spatial_in == (10, 12)
    assert model.graph_inputs[0].shape == ("N", 3, 10, 12)  # the batch stays symbolic
