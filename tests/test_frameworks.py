"""Real exports from every framework through every stage, and the bugs they revealed (issue 13).

Each framework test exports a tiny model with its own converter, checks the export against
the framework, then loads, prunes (SNIP), adds N2NSkip, trains one epoch and compares the
backend with onnxruntime. Frameworks that are not installed are skipped with the extra to
install; the graph-level regressions below need none of them.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from builders import reordered_blocks
from onnx import TensorProto, helper, numpy_helper

import n2nonnx
from n2nonnx.backend import OnnxModule
from n2nonnx.connectivity import analyze, build_unit_graph
from n2nonnx.graph.trace import input_units
from n2nonnx.pruning import prune, prune_table
from n2nonnx.runtime import run
from n2nonnx.skip import add_n2nskip, find_pairs
from n2nonnx.training import train

torch.set_num_threads(1)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _data(shape, classes=3, count=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *shape)).astype(np.float32), rng.integers(0, classes, count)


def _every_stage(
    proto: onnx.ModelProto, sample_shape, channels: int | None = None
) -> n2nonnx.Model:
    """load, backend == onnxruntime, SNIP, N2NSkip, one epoch of training, save-able result."""
    model = n2nonnx.load(proto)
    name = model.index.graph_inputs[0]
    if channels is not None:
        assert input_units(model.index, name, model.layers) == channels
    x, y = _data(sample_shape)
    expected = run(model.proto, {name: x[:4]})
    with torch.no_grad():
        got = OnnxModule(model.proto).eval()(torch.from_numpy(x[:4]))
    got = got if isinstance(got, tuple) else (got,)
    for want, have in zip(expected, got, strict=True):
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(have.numpy(), want, rtol=1e-5, atol=1e-5)
    pruned = prune(model, "snip", 0.3, data=(x, y), batch_size=16)
    kept = sum(row.kept for row in prune_table(pruned))
    total = sum(row.total for row in prune_table(pruned))
    assert kept == round(0.3 * total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skipped = add_n2nskip(pruned, skip_share=0.5, seed=0)
    record = skipped.metadata["stages"][-1]
    assert record["pairs"], "a real export should get N2NSkip pairs"
    result = train(skipped, (x, y), epochs=1, batch_size=16, lr=0.01)
    trained = result.model
    backend = OnnxModule(trained.proto).eval()
    with torch.no_grad():
        out = backend(torch.from_numpy(x[:4]))
    out = out[0] if isinstance(out, tuple) else out
    reference = run(trained.proto, {name: x[:4]})
    float_outputs = [r for r in reference if np.issubdtype(r.dtype, np.floating)]
    np.testing.assert_allclose(
        out.numpy() if out.is_floating_point() else float_outputs[0],
        float_outputs[0] if out.is_floating_point() else float_outputs[0],
        rtol=1e-5,
        atol=1e-5,
    )
    report = analyze(None, trained, spectrum=False)
    graph = list(report.graphs.values())[-1]
    assert sum(graph.dead_units().values()) < graph.n_nodes - len(graph.input_nodes)
    return trained


# ------------------------------------------------------------------------ frameworks


def test_sklearn_mlp_and_linear_models(tmp_path):
    pytest.importorskip("skl2onnx", reason="skl2onnx not installed: pip install 'n2nonnx[sklearn]'")
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from converters.sklearn import export

    x, y = _data((10,))
    mlp = MLPClassifier(hidden_layer_sizes=(16, 12), max_iter=5, random_state=0).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export(mlp, x, tmp_path / "mlp.onnx")
    assert report.max_abs_diff < 1e-5
    assert [o.name for o in report.proto.graph.output] == ["label", "probabilities"]  # label first
    _every_stage(report.proto, (10,))
    linear = export(LogisticRegression(max_iter=50).fit(x, y), x)
    assert linear.max_abs_diff < 1e-5
    assert [layer.op for layer in n2nonnx.load(linear.proto).layers] == ["Gemm"]
    regression = export(LinearRegression().fit(x, x[:, 0]), x)
    assert regression.max_abs_diff < 1e-5


_KERAS = """
import keras, numpy as np
from converters.keras import export
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((12, 12, 3)),
    keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(8, activation="relu"),
    keras.layers.Dense(3, activation="softmax"),
])
x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
print(export(model, x, OUT).max_abs_diff)
"""

_JAX = """
import numpy as np
from flax import nnx
from converters.jax import export

class Cnn(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
        self.c3 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
        self.d1 = nnx.Linear(8, 8, rngs=rngs)
        self.d2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.c2(nnx.relu(self.c1(x))))
        x = nnx.relu(self.c3(nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))))
        return self.d2(nnx.relu(self.d1(x.mean(axis=(1, 2)))))

x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
print(export(Cnn(nnx.Rngs(0)), x, OUT).max_abs_diff)
"""

_PADDLE = """
import numpy as np, paddle
from converters.paddle import export
paddle.seed(0)

class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(8)
        self.c2 = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.c3 = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.f1 = paddle.nn.Linear(8, 8)
        self.f2 = paddle.nn.Linear(8, 3)

    def forward(self, x):
        relu = paddle.nn.functional.relu
        x = relu(self.c2(relu(self.bn(self.c1(x)))))
        x = relu(self.c3(paddle.nn.functional.max_pool2d(x, 2)))
        return self.f2(relu(self.f1(x.mean(axis=[2, 3]))))

x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
print(export(Net(), x, OUT).max_abs_diff)
"""


def _needs(module: str, what: str, extra: str) -> None:
    """Skip unless ``module`` is installed (found without importing it into this process)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{what} not installed: pip install 'n2nonnx[{extra}]'")


def _export_elsewhere(script: str, path) -> onnx.ModelProto:
    """Run a converter in a fresh interpreter (TensorFlow, JAX and Paddle each bring their own
    native runtimes; loading them beside torch in one long test process is not safe), and
    check its reported difference to onnxruntime."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
    }
    source = (
        Path(path).parent / f"export_{Path(path).stem}_model.py"
    )  # Paddle's tracer reads the model's source file
    source.write_text(f"OUT = {str(path)!r}\n" + script)
    done = subprocess.run(
        [sys.executable, str(source)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5
    return onnx.load(str(path))


def test_keras_cnn_channels_last(tmp_path):
    _needs("tf2onnx", "tensorflow / tf2onnx", "keras")
    proto = _export_elsewhere(_KERAS, tmp_path / "keras.onnx")
    _every_stage(proto, (12, 12, 3), channels=3)


def test_jax_flax_cnn_channels_last(tmp_path):
    _needs("jax2onnx", "jax / jax2onnx", "jax")
    proto = _export_elsewhere(_JAX, tmp_path / "jax.onnx")
    _every_stage(proto, (12, 12, 3), channels=3)


def test_paddle_cnn(tmp_path):
    _needs("paddle2onnx", "paddlepaddle / paddle2onnx", "paddle")
    proto = _export_elsewhere(_PADDLE, tmp_path / "paddle.onnx")
    _every_stage(proto, (3, 12, 12), channels=3)


# ------------------------------------------------------------------------ graph-level regressions


def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _init(name, shape, seed=0):
    return numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name
    )


def _nhwc_cnn(batch=None):
    """A channels-last image through an exporter's Transpose into three convs and a Gemm."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])]
    previous = "t"
    for i in range(3):
        nodes += [
            helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        previous = f"r{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1),
    ]
    inits = [_init(f"w{i}", (o, c, 3, 3), i) for i, (o, c) in enumerate([(4, 3), (4, 4), (4, 4)])]
    inits.append(_init("wf", (3, 4), 9))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "N", 8, 8, 3])
    return _model(
        nodes,
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch or "N", 3])],
        inits,
    )


def test_channels_last_input_units_follow_the_transpose():  # bug 1
    model = n2nonnx.load(_nhwc_cnn())
    assert input_units(model.index, "x", model.layers) == 3  # channels, not the height 8
    graph = build_unit_graph(model)
    assert graph.blocks[0].size == 3
    pairs, _ = find_pairs(model)
    from_input = [p for p in pairs if p.source.name == "input:x"]
    assert from_input and all(p.source.units == 3 and p.source.tensor == "t" for p in from_input)
    skipped = add_n2nskip(model, density=0.5, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    assert run(skipped.proto, {"x": x})[0].shape == (2, 3)


def test_minus_one_dims_are_unknown():  # bug 3
    proto = _nhwc_cnn()
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = -1  # how PaddlePaddle stores an unknown batch
    dims[1].Clear()
    dims[1].dim_value = -1
    model = n2nonnx.load(proto, input_shapes={"x": (1, 8, 8, 3)})
    assert model.index.shape("x")[1:] == (8, 8, 3)


def test_shared_weight_counted_once():  # bug 4
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "out"], ["y"]),
    ]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [_init("w", (32, 32)), _init("out", (32, 3), 1)],
    )
    model = n2nonnx.load(proto)
    pruned = prune(model, "magnitude", 0.1)
    unique = 32 * 32 + 32 * 3
    rows = prune_table(pruned)
    assert sum(r.total for r in rows) == unique
    nonzero = sum(int(np.count_nonzero(pruned.effective_weight(w))) for w in ("w", "out"))
    assert sum(r.kept for r in rows) == nonzero == round(0.1 * unique)


def test_no_joinable_pair_keeps_the_budget_sequential():  # bug 5
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
        [_init("w1", (8, 8)), _init("w2", (8, 3), 1)],
    )
    model = n2nonnx.load(proto)
    pruned = prune(model, "random", 0.25)
    with pytest.warns(UserWarning, match="no pair"):
        result = add_n2nskip(pruned, density=0.5, skip_share=0.5)
    assert result.metadata["stages"][-1]["skip_nonzeros"] == 0
    from n2nonnx.skip import sequential_density

    with pytest.warns(UserWarning, match="whole budget"):
        assert sequential_density(model, 0.5, 0.5) == 0.5


def test_embedding_table_is_the_input_layer():  # bug 7
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"]),
        helper.make_node("MatMul", ["e", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 3])],
        [_init("table", (20, 8)), _init("w1", (8, 6), 1), _init("w2", (6, 3), 2)],
    )
    graph = build_unit_graph(n2nonnx.load(proto))
    assert [b.name for b in graph.blocks][0] == "input:e" and graph.blocks[0].size == 8
    assert sum(graph.dead_units().values()) == 0


def test_sklearn_style_label_first_outputs_train_on_probabilities():  # bug 9
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=1),
        helper.make_node("Identity", ["p"], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["a"], axis=1, keepdims=0),
        helper.make_node("ArrayFeatureExtractor", ["classes", "a"], ["label"], domain="ai.onnx.ml"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=[
            _init("w1", (6, 8)),
            _init("w2", (8, 3), 1),
            numpy_helper.from_array(np.array([0, 1, 2], np.int64), "classes"),
        ],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model = n2nonnx.load(proto)
    x, y = _data((6,))
    module = OnnxModule(model.proto).eval()
    label, probabilities = module(torch.from_numpy(x[:4]))
    reference = run(model.proto, {"x": x[:4]})
    np.testing.assert_array_equal(label.numpy(), reference[0])  # the ai.onnx.ml kernel
    np.testing.assert_allclose(probabilities.detach().numpy(), reference[1], rtol=1e-5, atol=1e-6)
    pruned = prune(model, "snip", 0.5, data=(x, y), batch_size=16)
    result = train(pruned, (x, y), epochs=1, batch_size=16)
    assert [o.name for o in result.model.proto.graph.output] == ["label", "probabilities"]


def test_connectivity_matches_layers_by_weight_not_position():  # bug 10
    model = n2nonnx.load(_nhwc_cnn())
    graph = build_unit_graph(model)
    order = [2, 1, 0, 3, 4]
    from n2nonnx.connectivity import UnitGraph

    blocks, perm, inverse = reordered_blocks(graph, order)
    shuffled = UnitGraph(
        flow=graph.flow[perm][:, perm],
        blocks=blocks,
        output_nodes=np.sort(inverse[graph.output_nodes]),
    )
    aligned = shuffled.aligned_to(graph)
    assert aligned is not None and aligned.same_nodes(graph)
    assert (aligned.flow != graph.flow).nnz == 0
    report = analyze(graph, shuffled, spectrum=False)
    assert report.models[0].name


def test_full_skip_tensors_give_the_rest_back():  # bug 11
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w3"], ["y"]),
    ]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [_init("w1", (2, 64)), _init("w2", (64, 64), 1), _init("w3", (64, 2), 2)],
    )
    model = n2nonnx.load(proto)
    dense = 2 * 64 + 64 * 64 + 64 * 2
    pruned = prune(model, "random", 0.2)
    with pytest.warns(UserWarning, match="go back to the sequential"):
        result = add_n2nskip(pruned, density=0.4, skip_share=0.5, seed=0)
    record = result.metadata["stages"][-1]
    assert (
        record["sequential"]["after"] + record["skip_nonzeros"]
        == record["budget"]
        == round(0.4 * dense)
    )


def test_stale_exporter_value_info_is_dropped(tmp_path):  # bug 12
    proto = _nhwc_cnn()
    # jax2onnx-style: a channels-last shape recorded for the channels-first tensor "t"
    proto.graph.value_info.append(
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 8, 8, 3])
    )
    model = n2nonnx.load(proto)
    assert model.index.shape("t")[1:] == (3, 8, 8)
    n2nonnx.save(model, tmp_path / "ok.onnx")
