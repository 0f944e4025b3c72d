"""Real exports that failed in some stage, each made here by its framework's own exporter.

A PaddlePaddle CNN whose flatten is computed from ``Shape`` on a symbolic batch, a model
exported with a fixed batch of 1, a token model with int64 inputs, and Softmax-ending Keras
and scikit-learn models (scoring and accuracy on probabilities). Frameworks that are not
installed are skipped.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from test_frameworks import _every_stage, _export_elsewhere, _needs

import n2nonnx
from n2nonnx import zoo
from n2nonnx.errors import ShapeError
from n2nonnx.pruning import prune_table

torch.set_num_threads(1)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_PADDLE_FLATTEN = """
import numpy as np, paddle
from converters.paddle import export
paddle.seed(0)

class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.c2 = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.f1 = paddle.nn.Linear(8 * 8 * 8, 16)
        self.f2 = paddle.nn.Linear(16, 3)

    def forward(self, x):
        relu = paddle.nn.functional.relu
        x = paddle.nn.functional.max_pool2d(relu(self.c1(x)), 2)
        x = paddle.nn.functional.max_pool2d(relu(self.c2(x)), 2)
        return self.f2(relu(self.f1(paddle.flatten(x, 1))))

x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
print(export(Net(), x, OUT).max_abs_diff)
"""


def test_paddle_flatten_on_a_symbolic_batch_needs_no_input_shape(tmp_path):
    _needs("paddle2onnx", "paddlepaddle / paddle2onnx", "paddle")
    proto = _export_elsewhere(_PADDLE_FLATTEN, tmp_path / "paddle_flatten.onnx")
    assert {n.op_type for n in proto.graph.node} >= {"Shape", "Slice", "Concat", "Reshape"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    model = n2nonnx.load(proto)
    flatten = next(n.output[0] for n in model.proto.graph.node if n.op_type == "Reshape")
    assert model.index.shape(flatten) == (dims[0].dim_param, 512)  # the batch stays symbolic
    _every_stage(proto, (3, 32, 32), channels=3)
    # Another unknown dim (PaddleOCR's 3 x 48 x -1) is not guessed: the user is asked for it.
    dims[3].Clear()
    dims[3].dim_value = -1
    with pytest.raises(ShapeError, match="--input-shape"):
        n2nonnx.prune(n2nonnx.load(proto), "magnitude", 0.5)
    given = n2nonnx.load(proto, input_shapes={"x": (1, 3, 32, 32)})
    assert given.index.shape(flatten) == (dims[0].dim_param, 512)


def test_a_fixed_batch_export_trains_and_evaluates_at_any_batch_size():
    from converters.pytorch import export
    from n2nonnx.backend import OnnxModule
    from n2nonnx.runtime import accuracy
    from n2nonnx.training import train

    torch.manual_seed(0)
    module = zoo.build("transformer")
    proto = export(module, torch.randn(1, 16, 8), dynamic_batch=False).proto
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    model = n2nonnx.load(proto)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 16, 8)).astype(np.float32)
    y = rng.integers(0, 10, 30)
    data = (x[:20], y[:20], x[20:], y[20:])
    pruned = n2nonnx.prune(model, "snip", 0.5, data=data, batch_size=8)
    result = train(pruned, data, epochs=1, batch_size=1)  # evaluation runs on 10 at a time
    backend = OnnxModule(result.model.proto).eval()
    assert backend.fixed_batch == 1
    with torch.no_grad():
        scores = backend(torch.from_numpy(x[20:]))
    expected = module.eval()(torch.from_numpy(x[20:21]))  # shapes only: weights differ
    assert scores.shape == (10, *expected.shape[1:])
    torch_accuracy = float((scores.argmax(-1).numpy() == y[20:]).mean())
    assert accuracy(result.model, x[20:], y[20:]) == pytest.approx(torch_accuracy)
    assert result.history.final.test_accuracy == pytest.approx(torch_accuracy)
    from n2nonnx.deployment import deploy

    deployed = deploy(result.model, data=data).summary["accuracy"]  # verified on 10 samples
    assert deployed["before"] == pytest.approx(torch_accuracy)


def test_a_fixed_batch_of_four_pads_the_last_chunk():
    from converters.pytorch import export
    from n2nonnx.backend import OnnxModule
    from n2nonnx.runtime import run

    torch.manual_seed(0)
    module = zoo.build("transformer")
    x = torch.randn(10, 16, 8)
    proto = export(module, x[:4], dynamic_batch=False).proto
    backend = OnnxModule(proto).eval()
    assert backend.fixed_batch == 4
    with torch.no_grad():
        got = backend(x)
        reference = module.eval()(x)
    np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-4, atol=1e-5)
    first = run(proto, x[:4].numpy())[0]
    np.testing.assert_allclose(got[:4].numpy(), first, rtol=1e-4, atol=1e-5)
    # A static batch the graph does not depend on keeps one pass (BatchNorm sees the batch).
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU())
    free = OnnxModule(export(mlp, torch.randn(1, 8), dynamic_batch=False).proto).train()
    assert free.fixed_batch == 1 and free(torch.randn(5, 8)).shape == (5, 6)
    assert free._batch_bound is False


class _TokenClassifier(torch.nn.Module):
    """A Hugging Face-style classifier head on token ids: an embedding and two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, input_ids):
        return self.fc2(torch.relu(self.fc1(self.embed(input_ids)))).mean(dim=1)


def test_int64_token_inputs_are_scored_trained_and_synflow_runs_in_embedding_space():
    from converters.pytorch import export
    from n2nonnx.pruning.criteria.synflow import embedding_space
    from n2nonnx.runtime import accuracy
    from n2nonnx.scl import learn_masks
    from n2nonnx.training import train

    torch.manual_seed(0)
    net = _TokenClassifier()
    ids = torch.randint(0, 50, (2, 12))
    proto = export(net, ids, input_names=["input_ids"], output_names=["logits"]).proto
    model = n2nonnx.load(proto)
    assert model.graph_inputs[0].dtype == "int64"
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, (48, 12)), rng.integers(0, 4, 48)
    data = (x[:32], y[:32], x[32:], y[32:])
    for method in ("snip", "grasp", "synflow"):
        pruned = n2nonnx.prune(model, method, 0.3, data=data, batch_size=16)
        rows = prune_table(pruned)
        assert sum(r.kept for r in rows) == round(0.3 * sum(r.total for r in rows)), method
    # SynFlow's all-ones input is ones in embedding space: the Gather is cut out.
    embedded, feeds = embedding_space(model)
    assert "Gather" not in {n.op_type for n in embedded.graph.node}
    assert list(feeds.values()) == [([1, 12, 16], True)]
    result = train(pruned, data, epochs=1, batch_size=8)
    logits = torch.from_numpy(np.asarray(n2nonnx.runtime.run(result.model, x[32:])[0]))
    onnx_accuracy = float((logits.argmax(-1).numpy() == y[32:]).mean())
    assert accuracy(result.model, x[32:].astype(np.float32), y[32:]) == pytest.approx(onnx_accuracy)
    from n2nonnx.deployment import deploy

    assert deploy(result.model, data=data).summary["accuracy"]["before"] == pytest.approx(
        onnx_accuracy
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch does not reach the density: kept by size
        learned = learn_masks(model, data, density=0.3, epochs=1, batch_size=8)
    assert learned.model.metadata["stages"][-1]["method"] == "scl"


def _criterion_scores(model: n2nonnx.Model, method: str, data) -> dict[str, np.ndarray]:
    """The raw scores of a data-driven criterion on ``model`` (as prune computes them)."""
    from n2nonnx.data import resolve_data
    from n2nonnx.graph.outputs import scores_only
    from n2nonnx.pruning.registry import ScoringContext, get_criterion

    context = ScoringContext(
        model.with_proto(scores_only(model.proto)),
        [layer.weight for layer in model.layers],
        0.3,
        np.random.default_rng(0),
        data=resolve_data(data),
        batch_size=32,
    )
    return get_criterion(method).score(context)


def _without_softmax(model: n2nonnx.Model) -> n2nonnx.Model:
    """The same model ending in the Softmax's input (logits) instead of its output."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "Identity"
            del node.attribute[:]
    return n2nonnx.load(proto)


def _same_scores(model: n2nonnx.Model, method: str, data) -> None:
    from n2nonnx.graph.outputs import output_kind

    logits = _without_softmax(model)
    assert output_kind(model.proto) == "probabilities" and output_kind(logits.proto) == "logits"
    ours, reference = (
        _criterion_scores(model, method, data),
        _criterion_scores(logits, method, data),
    )
    for name, expected in reference.items():
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(ours[name], expected, rtol=1e-3, atol=1e-5 * scale)


def test_sklearn_mlp_scores_on_probabilities_and_accuracy_reads_them(tmp_path):
    pytest.importorskip("skl2onnx", reason="skl2onnx not installed: pip install 'n2nonnx[sklearn]'")
    from sklearn.neural_network import MLPClassifier

    from converters.sklearn import export
    from n2nonnx.deployment import deploy
    from n2nonnx.runtime import accuracy

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0).fit(
            x[:60], y[:60]
        )
        proto = export(mlp, x).proto
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    model = n2nonnx.load(proto)
    data = (x[:60], y[:60], x[60:], y[60:])
    _same_scores(model, "snip", data)
    _same_scores(model, "grasp", data)
    expected = mlp.score(x[60:], y[60:])
    assert accuracy(model, x[60:], y[60:]) == pytest.approx(expected)
    summary = deploy(model, data=data).summary
    assert summary["accuracy"]["before"] == pytest.approx(expected)


def test_keras_softmax_model_scores_on_probabilities(tmp_path):
    _needs("tf2onnx", "tensorflow / tf2onnx", "keras")
    from test_frameworks import _KERAS

    model = n2nonnx.load(_export_elsewhere(_KERAS, tmp_path / "keras.onnx"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    data = (x[:32], y[:32], x[32:], y[32:])
    _same_scores(model, "snip", data)
    _same_scores(model, "grasp", data)
