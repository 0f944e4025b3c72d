"""Training through the ONNX backend: accuracy, masks, determinism, write-back, history, CLI."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from converters.pytorch import export
from n2nonnx import io, metadata, training
from n2nonnx.cli import main
from n2nonnx.errors import DataError, InvalidArgumentError, TrainingDivergedError
from n2nonnx.graph.masking import find_mask_sites, gate
from n2nonnx.runtime import run
from n2nonnx.training import History, TrainConfig, TrainResult, evaluate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK = dict(epochs=2, batch_size=64, progress=False)
# These tests were calibrated with plain SGD (the library's default recipe is Adam + cosine).
SGD = TrainConfig(optimizer="sgd", lr=0.05, schedule="none")


def train(model, data, **options):
    """``n2nonnx.training.train`` starting from the plain SGD recipe."""
    return training.train(model, data, SGD, **options)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread, and a busy shared CPU stalls OpenMP teams."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------- models


def randomize_batchnorm(net: nn.Module) -> None:
    """Distinct BN statistics (a fresh BN would export with shared, deduplicated initializers)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
                layer.bias.normal_(0, 0.1, generator=generator)
                layer.running_mean.normal_(0, 0.1, generator=generator)
                layer.running_var.copy_(
                    torch.rand(layer.running_var.shape, generator=generator) + 0.5
                )


def exported_mlp(
    features: int, classes: int, hidden: int = 32, softmax: bool = False
) -> onnx.ModelProto:
    """Linear -> BatchNorm -> ReLU -> Linear (-> Softmax), exported with the project's helper."""
    torch.manual_seed(0)
    layers = [
        nn.Linear(features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    ]
    net = nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else []))
    randomize_batchnorm(net)
    return export(net, torch.randn(2, features)).proto


def with_dropout(proto: onnx.ModelProto, ratio: float = 0.3) -> onnx.ModelProto:
    """Insert a Dropout after the first Relu."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    nodes = list(model.graph.node)
    relu = next(i for i, node in enumerate(nodes) if node.op_type == "Relu")
    source = nodes[relu].output[0]
    for node in nodes[relu + 1 :]:
        node.input[:] = ["dropped" if name == source else name for name in node.input]
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(ratio, np.float32), "dropout_ratio")
    )
    dropout = helper.make_node("Dropout", [source, "dropout_ratio"], ["dropped"], name="dropout")
    nodes.insert(relu + 1, dropout)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def with_mask(proto: onnx.ModelProto, weight: str, density: float, zero_stored: bool = True):
    """Gate ``weight`` with a random mask by the n2nonnx convention; returns (model, mask)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    init = next(t for t in model.graph.initializer if t.name == weight)
    value = numpy_helper.to_array(init)
    mask = (np.random.default_rng(0).random(value.shape) < density).astype(value.dtype)
    gate(model.graph, weight, mask, zero_weight=zero_stored)
    onnx.checker.check_model(model, full_check=True)
    return model, mask


@pytest.fixture(scope="module")
def mlp20() -> onnx.ModelProto:
    return exported_mlp(20, 4)


@pytest.fixture(scope="module")
def trained(mlp20) -> TrainResult:
    return train(mlp20, "synthetic", schedule="cosine", weight_decay=5e-4, **QUICK)


def initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


# ------------------------------------------------------------------------- learning


def test_synthetic_accuracy_well_above_chance(trained):
    history = trained.history
    assert history.final.test_accuracy > 0.7  # chance: 0.25
    assert history[-1].train_loss < history[0].train_loss


def test_digits_accuracy_well_above_chance():
    result = train(
        exported_mlp(64, 10),
        "digits",
        optimizer="adam",
        lr=0.01,
        epochs=3,
        batch_size=64,
        progress=False,
    )
    assert result.history.final.test_accuracy > 0.8  # chance: 0.1


def test_cnn1d_gets_mnist1d_reshaped_to_its_input(tmp_path, monkeypatch):
    monkeypatch.setenv("N2NONNX_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(160, 10))
    result = train(
        export(net, torch.randn(2, 1, 40)).proto,
        "mnist1d:train=200,test=100",
        epochs=1,
        progress=False,
    )
    assert result.data.x_train.shape == (200, 1, 40)
    assert np.isfinite(result.history.final.train_loss)


def test_softmax_output_trains_on_log_probabilities():
    result = train(exported_mlp(20, 4, softmax=True), "synthetic", **QUICK)
    assert result.history.final.test_accuracy > 0.6


# ------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("optimizer", "settings"),
    [("sgd", dict(momentum=0.9, weight_decay=5e-4)), ("adamw", dict(lr=0.01, weight_decay=0.05))],
)
@pytest.mark.parametrize("zero_stored", [True, False])
def test_masked_weights_stay_exactly_zero(mlp20, optimizer, settings, zero_stored):
    weight = next(
        t.name for t in mlp20.graph.initializer if t.name.endswith("weight") and len(t.dims) == 2
    )
    masked, mask = with_mask(mlp20, weight, density=0.3, zero_stored=zero_stored)
    result = train(masked, "synthetic", optimizer=optimizer, **settings, **QUICK)
    before, after = initializers(masked)[weight], initializers(result.model.proto)[weight]
    assert np.all(after[mask == 0] == 0.0)  # exactly, even under momentum and weight decay
    assert np.all(result.module.tensor(weight).detach().numpy()[mask == 0] == 0.0)
    assert not np.allclose(after[mask == 1], before[mask == 1])
    mask_name = find_mask_sites(result.model.proto.graph)[weight].mask
    assert np.array_equal(initializers(result.model.proto)[mask_name], mask)


# ------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_weights(mlp20):
    model = with_dropout(mlp20)
    torch_state = torch.get_rng_state()
    first = train(model, "synthetic", seed=3, **QUICK)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the caller's RNG is untouched
    second = train(model, "synthetic", seed=3, **QUICK)
    other = train(model, "synthetic", seed=4, **QUICK)
    a, b, c = (initializers(r.model.proto) for r in (first, second, other))
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not all(np.array_equal(a[name], c[name]) for name in a)
    assert first.history.column("train_loss") == second.history.column("train_loss")
    assert first.model.proto.SerializeToString() == second.model.proto.SerializeToString()


# ------------------------------------------------------------------------- write-back


def test_write_back_runs_in_onnxruntime(mlp20, trained, tmp_path):
    original = mlp20.SerializeToString()
    path = io.save(trained.model, tmp_path / "trained.onnx")
    x = trained.data.x_test.numpy()
    (from_ort,) = run(str(path), {"x": x})
    trained.module.eval()
    with torch.no_grad():
        from_torch = trained.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(from_ort, from_torch, rtol=1e-5, atol=1e-5)

    proto = trained.model.proto
    assert [n.name for n in proto.graph.node] == [n.name for n in mlp20.graph.node]
    assert [t.name for t in proto.graph.initializer] == [t.name for t in mlp20.graph.initializer]
    old, new = initializers(mlp20), initializers(proto)
    for stat in [name for name in old if "running_" in name]:
        assert not np.allclose(old[stat], new[stat]), stat  # BN statistics trained and written
    assert mlp20.SerializeToString() == original  # the input is never modified
    (record,) = metadata.stages(proto, "train")
    assert record["optimizer"] == "sgd" and record["epochs"] == 2 and record["data"] == "synthetic"


def test_batchnorm_statistics_shared_by_the_exporter_are_trained_separately(tmp_path):
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    raw = export(fresh, torch.randn(2, 20)).proto  # running_var = Identity(bn.weight) ...
    assert "Identity" in [node.op_type for node in raw.graph.node]
    path = tmp_path / "fresh.onnx"
    onnx.save(raw, str(path))
    result = train(str(path), "synthetic", **QUICK)  # a path works too; loading normalises
    values = initializers(result.model.proto)
    assert not np.allclose(values["1.running_var"], values["1.weight"])
    assert not np.allclose(values["1.running_mean"], 0.0)
    assert result.model.source == path


# ------------------------------------------------------------------------- history


def test_history_contents(trained, tmp_path):
    history = trained.history
    assert len(history) == 2 and [r.epoch for r in history] == [1, 2]
    record = history[0]
    for value in (record.train_loss, record.test_loss, record.seconds):
        assert np.isfinite(value) and value >= 0
    assert 0 <= record.train_accuracy <= 1 and 0 <= record.test_accuracy <= 1
    assert history.column("lr")[0] == pytest.approx(0.05) and history.column("lr")[1] < 0.05
    assert history.best().test_accuracy == max(history.column("test_accuracy"))
    assert history.best("test_loss").test_loss == min(history.column("test_loss"))
    document = history.to_dict()
    assert set(document) == {"epochs", "best", "final"}
    assert set(document["epochs"][0]) == set(History.METRICS)
    assert History.from_dict(json.loads(json.dumps(document))).records == history.records
    saved = json.loads(history.save_json(tmp_path / "h.json").read_text())
    assert saved == document
    assert "epoch 1/2" in record.summary(2)


def test_step_and_onecycle_schedules(mlp20):
    step = train(mlp20, "synthetic", schedule="step", step_size=1, gamma=0.5, **QUICK)
    assert step.history.column("lr") == pytest.approx([0.05, 0.025])
    onecycle = train(mlp20, "synthetic", schedule="onecycle", optimizer="adam", lr=0.01, **QUICK)
    assert np.isfinite(onecycle.history.final.train_loss)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(optimizer="rmsprop"), "optimizer='rmsprop'.*adam"),
        (dict(schedule="linear"), "schedule='linear'"),
        (dict(lr=-1.0), "lr=-1.0"),
        (dict(epochs=0), "epochs=0"),
        (dict(loss="hinge"), "loss='hinge'"),
        (dict(device="tpu"), "device='tpu'"),
    ],
)
def test_invalid_arguments(mlp20, settings, message):
    with pytest.raises(InvalidArgumentError, match=message):
        train(mlp20, "synthetic", **{**QUICK, **settings})


def test_divergence_is_reported(mlp20):
    with pytest.raises(TrainingDivergedError, match="diverged.*lower the learning rate"):
        train(mlp20, "synthetic", lr=1e12, momentum=0.0, **QUICK)


def test_evaluate_matches_the_last_epoch(trained):
    loss, accuracy = evaluate(trained.module, trained.data)
    assert accuracy == trained.history.final.test_accuracy
    assert loss == pytest.approx(trained.history.final.test_loss, rel=1e-6)


def test_labels_beyond_the_outputs(mlp20):
    with pytest.raises(DataError, match="4 class scores.*go up to 5"):
        train(mlp20, "synthetic:classes=6", **QUICK)


# ------------------------------------------------------------------------- CLI


@pytest.fixture
def model_file(mlp20, tmp_path) -> Path:
    return io.save(mlp20, tmp_path / "in.onnx")


def test_cli_train(model_file, tmp_path, capsys, caplog):
    before = model_file.read_bytes()
    out, history = tmp_path / "out.onnx", tmp_path / "history.json"
    options = (
        "--data synthetic --epochs 2 --optimizer sgd --lr 0.05 --momentum 0.9 --weight-decay 5e-4"
        " --batch-size 64 --schedule cosine --seed 0 --no-progress"
    )
    status = main(
        ["train", str(model_file), "-o", str(out), "--history", str(history), *options.split()]
    )
    printed = capsys.readouterr().out + caplog.text  # epoch lines are log lines (stderr on the CLI)
    assert status == 0
    assert "epoch 1/2" in printed and "epoch 2/2" in printed and "final test accuracy" in printed
    assert model_file.read_bytes() == before
    trained = io.load(out)
    assert metadata.stages(trained.proto, "train")
    assert len(json.loads(history.read_text())["epochs"]) == 2


def _bad_npz(path: Path) -> str:
    np.savez(path, x_train=np.zeros((8, 20)), y_train=np.zeros(8, int), x_test=np.zeros((4, 20)))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda tmp: ["--data", _bad_npz(tmp / "d.npz")], "no array 'y_test'"),
        (lambda tmp: ["--data", "digits"], r"samples of shape \(64,\).*expects \(batch, 20\)"),
        (lambda tmp: ["--data", "synthetic", "--optimizer", "lion"], "invalid choice: 'lion'"),
    ],
)
def test_cli_bad_inputs_exit_2_without_output(model_file, tmp_path, capsys, extra, message):
    out = tmp_path / "out.onnx"
    command = ["train", str(model_file), "-o", str(out), "--epochs", "1", "--no-progress"]
    status = main([*command, *extra(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2 and not out.exists()
    assert error.startswith("n2nonnx train: error: ") and len(error.strip().splitlines()) == 1
    assert re.search(message, error)


def test_cli_refuses_to_overwrite_its_input(model_file, capsys):
    before = model_file.read_bytes()
    status = main(
        ["train", str(model_file), "-o", str(model_file), "--data", "synthetic", "--no-progress"]
    )
    assert status == 2 and "never modifies its input" in capsys.readouterr().err
    assert model_file.read_bytes() == before


# ------------------------------------------------------------------------- benchmark


def test_benchmark_quick_prints_ratio_table(capsys):
    namespace = runpy.run_path(str(EXAMPLES / "benchmark_backend.py"), run_name="benchmark")
    assert namespace["main"](["--quick", "--reps", "2", "--warmup", "1"]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "torch ms" in printed and "onnx ms" in printed
    assert "mlp" in printed and "resnet" in printed
