"""A real model over 2 GB (two 1 GiB weights in external data): load, layer view, save, run.

Protobuf cannot hold a message over 2 GB, so every path that would serialise the whole
model (checking, shape inference, saving) must take the route onnx provides for large
models. The weights are written straight to the side file (numpy), which keeps the build
fast; the test takes about two minutes and 8 GB of memory.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import n2nonnx
from n2nonnx.io import is_large
from n2nonnx.runtime import run

SIZE = 16384  # a 16384 x 16384 float32 weight is 1 GiB; two of them exceed 2 GB


def external_tensor(name: str, location: str, offset: int, length: int) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[SIZE, SIZE])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    return tensor


@pytest.mark.large_memory
def test_model_over_2gb(tmp_path):
    length = SIZE * SIZE * 4
    with open(tmp_path / "big.data", "wb") as handle:
        for scale in (1.0, 2.0):  # diagonal weights: y = 2 * relu(x)
            row = np.zeros(SIZE, np.float32)
            for i in range(SIZE):
                row[i] = scale
                handle.write(row.tobytes())
                row[i] = 0.0
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SIZE])],
        initializer=[
            external_tensor("w1", "big.data", 0, length),
            external_tensor("w2", "big.data", length, length),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (tmp_path / "big.onnx").write_bytes(proto.SerializeToString())

    model = n2nonnx.load(tmp_path / "big.onnx")
    assert is_large(model.proto)
    assert [(layer.weight, layer.units, layer.in_units) for layer in model.layers] == [
        ("w1", SIZE, SIZE),
        ("w2", SIZE, SIZE),
    ]
    assert model.layers[0].feeds[0].target == "fc2"

    out = n2nonnx.save(model, tmp_path / "copy.onnx")  # switches to external data by itself
    assert (tmp_path / "copy.onnx.data").stat().st_size >= 2 * length
    assert out.stat().st_size < 10_000
    x = np.linspace(-1, 1, SIZE, dtype=np.float32)[None, :]
    np.testing.assert_array_equal(run(str(out), x)[0], 2 * np.maximum(x, 0))
