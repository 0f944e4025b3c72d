"""BatchNorm statistics recalibrated after training: eval mode as good as batch statistics.

A sparse N2NSkip VGG-1D (uniform allocation, 5%) leaves near-constant channels whose
variance is far below epsilon; with the exponential averages of training its eval-mode
accuracy collapses to chance, while the recalibrated model comes back to the
batch-statistics accuracy, in PyTorch and in onnxruntime alike (on the written model).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from n2nonnx import add_n2nskip, io, metadata, prune, runtime, train, zoo
from n2nonnx.backend import OnnxModule
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.training.batchnorm import recalibrate_batchnorm

torch.set_num_threads(1)

VGG = {"widths": [16, 16, 32, 32, 64, 64], "pool_after": [1, 3]}


@pytest.fixture(scope="module")
def sparse_vgg(tmp_path_factory):
    path = tmp_path_factory.mktemp("bn") / "vgg1d.onnx"
    zoo.export_builtin("vgg1d", path, 0, VGG)
    pruned = prune(io.load(path), "expander", 0.05, allocation="uniform", seed=0, rescale=True)
    return add_n2nskip(pruned, density=0.05, skip_share=0.5, sampling="uniform", seed=0)


@pytest.fixture(scope="module")
def runs(sparse_vgg):
    """The same training without and with recalibration."""
    return {
        recalibrate: train(sparse_vgg, "mnist1d", epochs=4, recalibrate_bn=recalibrate)
        for recalibrate in (False, True)
    }


def _batch_statistics_accuracy(model, x, y) -> float:
    module = OnnxModule(model.proto)  # a fresh module: no copy shares its kernels' mode flag
    module.train()
    with torch.no_grad():
        return float((module(torch.as_tensor(x)).argmax(1) == torch.as_tensor(y)).double().mean())


def _ort_accuracy(model, data) -> float:
    return runtime.accuracy(model, data.x_test.numpy().astype(np.float32), data.y_test.numpy())


def test_recalibration_restores_eval_accuracy_in_onnxruntime(runs):
    stale, fixed = runs[False], runs[True]
    x, y = fixed.data.x_test.numpy().astype(np.float32), fixed.data.y_test.numpy()
    batch_stats = _batch_statistics_accuracy(fixed.model, x, y)
    assert batch_stats > 0.15  # the network learned something
    stale_eval, fixed_eval = (
        _ort_accuracy(stale.model, stale.data),
        _ort_accuracy(fixed.model, fixed.data),
    )
    assert stale_eval < batch_stats - 0.05  # the defect: eval mode far below batch statistics
    assert fixed_eval >= batch_stats - 0.03  # the fix: eval mode about as good as batch statistics
    assert fixed.history.final.test_accuracy == pytest.approx(fixed_eval, abs=1.5 / len(y))
    assert stale.history.final.test_accuracy == pytest.approx(stale_eval, abs=1.5 / len(y))


def test_recalibration_changes_only_running_statistics(runs):
    stale = {
        t.name: onnx.numpy_helper.to_array(t) for t in runs[False].model.proto.graph.initializer
    }
    fixed = {
        t.name: onnx.numpy_helper.to_array(t) for t in runs[True].model.proto.graph.initializer
    }
    assert stale.keys() == fixed.keys()
    stats = {
        n.input[i]
        for n in runs[True].model.proto.graph.node
        if n.op_type == "BatchNormalization"
        for i in (3, 4)
    }
    assert len(stats) == 12
    for name, value in fixed.items():
        if name in stats:
            assert not np.array_equal(value, stale[name]), name
        else:
            np.testing.assert_array_equal(value, stale[name], err_msg=name)
    untimed = [
        [(r.train_loss, r.test_loss, r.test_accuracy) for r in run.history] for run in runs.values()
    ]
    assert untimed[0][:-1] == untimed[1][:-1]  # the same run up to the last record's test figures
    assert runs[False].history.final.train_loss == runs[True].history.final.train_loss


def test_written_statistics_equal_onnxruntime_statistics(runs):
    """Each running mean/variance is the mean/variance of the BatchNorm's eval-mode input."""
    result = runs[True]
    proto = onnx.ModelProto()
    proto.CopyFrom(result.model.proto)
    norms = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    for node in norms:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.input[0]))
    x = result.data.x_train.numpy().astype(np.float32)
    outputs = runtime.run(runtime.make_session(proto, optimization="none"), x)[1:]
    values = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    near_constant = total_stabilised = 0
    for node, activation in zip(norms, outputs, strict=True):
        axes = (0, *range(2, activation.ndim))
        mean = activation.astype(np.float64).mean(axes)
        variance = activation.astype(np.float64).var(axes)
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = np.sqrt(variance + eps)  # what eval mode divides by
        running_mean, running_var = values[node.input[3]], values[node.input[4]]
        # float32 rounding is relative to the values, and near-constant channels upstream
        # (below epsilon, not stabilised) amplify the two runtimes' differences up to ~300
        # times: 1e-3 relative here (the running averages of training are off by far more)
        magnitude = np.sqrt(mean**2 + variance)
        np.testing.assert_array_less(np.abs(running_mean - mean), 1e-3 * (scale + magnitude))
        stabilised = (running_var == np.float32(1 - eps)) & (variance < eps / 100)
        np.testing.assert_allclose(
            running_var[~stabilised] + eps, variance[~stabilised] + eps, rtol=1e-3
        )
        near_constant += int((variance < eps).sum())
        total_stabilised += int(stabilised.sum())
    record = metadata.stages(result.model.proto, "train")[-1]["batchnorm_recalibration"]
    assert record["layers"] == 6 and record["samples"] == len(x)
    assert sum(record["near_constant_channels"].values()) == near_constant > 0
    assert sum(record["stabilised_channels"].values()) == total_stabilised > 0
    assert record["test_accuracy_before"] == runs[False].history.final.test_accuracy
    assert "batchnorm_recalibration" not in metadata.stages(runs[False].model.proto, "train")[-1]


def test_recalibrate_batchnorm_is_exact_subset_and_restores_mode(sparse_vgg):
    module = OnnxModule(sparse_vgg.proto)
    module.train()
    x = torch.randn(300, 1, 40, generator=torch.Generator().manual_seed(0))
    first = recalibrate_batchnorm(module, x, batch_size=64, max_samples=200, seed=3)
    assert module.training and first.samples == 200 and len(first.layers) == 6
    means = [module.tensor(name).clone() for name in (layer.name for layer in first.layers)]
    again = OnnxModule(sparse_vgg.proto)
    recalibrate_batchnorm(
        again, x, batch_size=200, max_samples=200, seed=3
    )  # batching changes nothing
    for layer, mean in zip(first.layers, means, strict=True):
        torch.testing.assert_close(again.tensor(layer.name), mean, rtol=1e-6, atol=1e-7)
    assert all(layer.constant <= layer.near_constant <= layer.channels for layer in first.layers)
    assert all(
        layer.stabilised <= layer.input_independent <= layer.near_constant for layer in first.layers
    )
    exact = OnnxModule(sparse_vgg.proto)
    unstabilised = recalibrate_batchnorm(exact, x, max_samples=200, seed=3, stabilise=False)
    assert sum(layer.stabilised for layer in unstabilised.layers) == 0
    assert sum(layer.stabilised for layer in first.layers) > 0


def test_model_without_batchnorm_and_bad_arguments(tmp_path):
    path = tmp_path / "mlp.onnx"
    zoo.export_builtin("mlp", path, 0, {"hidden": [16]})
    result = train(io.load(path), "mnist1d", epochs=1)
    assert "batchnorm_recalibration" not in metadata.stages(result.model.proto, "train")[-1]
    assert recalibrate_batchnorm(result.module, result.data.x_train[:8].float()).layers == []
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        recalibrate_batchnorm(result.module, result.data.x_train.float(), batch_size=0)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        recalibrate_batchnorm(result.module, result.data.x_train[:0].float())
