"""remove_units on hand-built graphs (exact expected shapes) and zoo models (against onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest
from builders import conv_net, gemm_mlp

import n2nonnx
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import run
from n2nonnx.units import remove_units


def zeroed_reference(model, units):
    """The input model with the consumers' columns of the removed units set to zero."""
    values = {}
    for layer in model.layers:
        weight = np.array(model.effective_weight(layer))
        for edge in layer.fed_by:
            if edge.source not in units or edge.unit_map is None:
                continue
            columns = np.flatnonzero(np.isin(edge.unit_map, units[edge.source]))
            if layer.groups == 1:
                index = [slice(None)] * weight.ndim
                index[layer.in_axis] = columns
                weight[tuple(index)] = 0
            else:
                per_in, per_out = layer.in_units // layer.groups, layer.units // layer.groups
                for column in columns:
                    group = column // per_in
                    weight[group * per_out : (group + 1) * per_out, column % per_in] = 0
        values[layer.weight] = weight
    return model.with_initializers(values)


def check_against_zeroed(model, units, batch=3):
    reduced = remove_units(model, units)
    shape = [batch, *model.graph_inputs[0].shape[1:]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = run(zeroed_reference(model, units), x)[0]
    np.testing.assert_allclose(
        run(reduced, x)[0], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )
    return reduced


def shapes(model):
    return {t.name: tuple(t.dims) for t in model.proto.graph.initializer}


def test_mlp_units_leave_weights_bias_batchnorm_and_consumers():
    model = n2nonnx.load(gemm_mlp(13))
    reduced = check_against_zeroed(model, {"fc1": [0, 3]})
    got = shapes(reduced)
    assert got["w1"] == (14, 12) and got["b1"] == (14,)
    assert got["s1"] == got["t1"] == got["m1"] == got["v1"] == (14,)
    assert got["w2"] == (14, 8)  # transB=0: inputs on axis 0
    assert got["wp"] == (8, 14)  # transB=1: inputs on axis 1
    assert got["w3"] == (8, 4)


def test_sum_couples_its_operands():
    model = n2nonnx.load(gemm_mlp(13))
    with pytest.raises(InvalidArgumentError, match="removed together"):
        remove_units(model, {"fc2": [1]})
    reduced = check_against_zeroed(model, {"fc2": [1], "proj": [1]})
    got = shapes(reduced)
    assert (
        got["w2"] == (16, 7) and got["wp"] == (7, 16) and got["w3"] == (7, 4) and got["b2"] == (7,)
    )


def test_conv_channel_removal_follows_flatten():
    model = n2nonnx.load(conv_net(13))
    reduced = check_against_zeroed(model, {"conv": [1]})
    got = shapes(reduced)
    assert got["cw"] == (3, 2, 3, 3) and got["cb"] == (3,) and got["s"] == (3,)
    assert got["fw"] == (5, 48)  # 3 channels x 4 x 4 after pooling


def test_whole_layer_goes_with_its_nodes():
    model = n2nonnx.load(gemm_mlp(13))
    reduced = remove_units(model, {"proj": list(range(8))})
    silent = model.with_initializers(
        {"wp": np.zeros((8, 16), np.float32), "bp": np.zeros(8, np.float32)}
    )
    x = np.random.default_rng(1).standard_normal((3, 12)).astype(np.float32)
    np.testing.assert_allclose(run(reduced, x)[0], run(silent, x)[0], rtol=1e-6, atol=1e-7)
    assert "wp" not in shapes(reduced) and "Sum" not in [
        n.op_type for n in reduced.proto.graph.node
    ]
    assert [n.op_type for n in reduced.proto.graph.node].count("Gemm") == 2


def test_refuses_graph_outputs_and_unknown_layers():
    model = n2nonnx.load(gemm_mlp(13))
    with pytest.raises(InvalidArgumentError, match="graph output"):
        remove_units(model, {"fc3": [0]})
    with pytest.raises(InvalidArgumentError, match="no layer named"):
        remove_units(model, {"nope": [0]})
    with pytest.raises(InvalidArgumentError, match="has 16 units"):
        remove_units(model, {"fc1": [16]})


def test_residual_concat_and_depthwise(zoo_models):
    resnet = n2nonnx.load(zoo_models["resnet"])
    with pytest.raises(InvalidArgumentError, match="removed together"):
        remove_units(resnet, {"/3/conv2/Conv": [1]})
    reduced = check_against_zeroed(
        resnet, {"/3/conv2/Conv": [1], "/0/Conv": [1], "/4/conv1/Conv": [0, 5]}
    )
    assert reduced.layer("/4/shortcut/shortcut.0/Conv").weight_shape == (16, 7, 1, 1)

    densenet = n2nonnx.load(zoo_models["densenet"])
    reduced = check_against_zeroed(densenet, {"/0/Conv": [1], "/1/conv/Conv": [2, 3]})
    assert reduced.layer("/3/conv/Conv").weight_shape == (
        4,
        13,
        3,
        3,
    )  # 16 - 3 concatenated channels
    assert reduced.layer("/8/Gemm").weight_shape == (10, 17)

    mobilenet = n2nonnx.load(zoo_models["mobilenet"])
    # Depthwise /3/Conv loses groups 1 and 4 while /0/Conv keeps those channels: a Gather selects them.
    reduced = check_against_zeroed(mobilenet, {"/3/Conv": [1, 4], "/12/Conv": [0, 8, 16, 24]})
    assert reduced.layer("/3/Conv").weight_shape == (14, 1, 3, 3)
    assert reduced.layer("/15/Conv").weight_shape == (32, 7, 3, 3)
    assert "Gather" in [n.op_type for n in reduced.proto.graph.node]
    with pytest.raises(InvalidArgumentError, match="different sizes"):
        remove_units(mobilenet, {"/12/Conv": [0]})
