"""Training an ONNX model with the PyTorch backend: optimizers, schedules, history, write-back.

:func:`train` runs the model's own graph (:class:`~n2nonnx.backend.module.OnnxModule`),
keeps every masked weight exactly zero after each optimizer step, evaluates on the
held-out split after each epoch, and writes the trained values (BatchNorm running
statistics included) back into the same initializers of a new model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from n2nonnx import io, metadata
from n2nonnx.backend.module import OnnxModule
from n2nonnx.data import TrainTestData, model_input, resolve_data
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.registry import name_registry

OptimizerFactory = Callable[[list[torch.nn.Parameter], "TrainConfig"], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, "TrainConfig", int], Any]

OPTIMIZERS: dict[str, OptimizerFactory] = {}
SCHEDULES: dict[str, ScheduleFactory] = {}


# Decorators: an optimizer factory is ``(params, config) -> Optimizer``; a per-step LR
# schedule is ``(optimizer, config, total_steps) -> scheduler``.
register_optimizer = name_registry(OPTIMIZERS, "optimizer")
register_schedule = name_registry(SCHEDULES, "schedule")


@register_optimizer("sgd")
def _sgd(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@register_optimizer("adam")
def _adam(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@register_optimizer("adamw")
def _adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@register_schedule("cosine")
def _cosine(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


@register_schedule("step")
def _step(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    steps_per_epoch = max(1, total_steps // config.epochs)
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.step_size * steps_per_epoch, gamma=config.gamma
    )


@register_schedule("onecycle")
def _onecycle(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    cycle_momentum = config.optimizer != "sgd" or config.momentum > 0
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, cycle_momentum=cycle_momentum
    )


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (validated; recorded in the model's metadata).

    See :func:`train` for the meaning of each field. ``step_size`` is in epochs.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str | None = None
    step_size: int = 0
    gamma: float = 0.1
    seed: int = 0
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        _require(
            isinstance(self.epochs, int) and self.epochs >= 1,
            "epochs",
            self.epochs,
            "an integer >= 1",
        )
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            "batch_size",
            self.batch_size,
            "an integer >= 1",
        )
        _require(
            self.optimizer in OPTIMIZERS,
            "optimizer",
            self.optimizer,
            f"one of {sorted(OPTIMIZERS)}",
        )
        _require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a number > 0")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _require(
            self.schedule is None or self.schedule in SCHEDULES,
            "schedule",
            self.schedule,
            f"None or one of {sorted(SCHEDULES)}",
        )
        _require(
            self.step_size >= 0, "step_size", self.step_size, "an integer >= 0 (0: epochs // 3)"
        )
        _require(0 < self.gamma <= 1, "gamma", self.gamma, "in (0, 1]")
        _require(self.loss in LOSSES, "loss", self.loss, f"one of {sorted(LOSSES)}")
        if self.step_size == 0:
            object.__setattr__(self, "step_size", max(1, self.epochs // 3))


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidArgumentError(f"{name}={value!r} is not valid; expected {expected}")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did: mean losses and accuracies (fractions in [0, 1]) and its cost."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    seconds: float

    def summary(self, total_epochs: int | None = None) -> str:
        """One printable line, e.g. ``epoch 3/20  loss 0.412  acc 86.1%  test ...``."""
        of = f"/{total_epochs}" if total_epochs else ""
        return (
            f"epoch {self.epoch}{of}  train loss {self.train_loss:.4f} acc {self.train_accuracy:6.2%}"
            f"  test loss {self.test_loss:.4f} acc {self.test_accuracy:6.2%}"
            f"  lr {self.lr:.3g}  {self.seconds:.1f}s"
        )


class History:
    """Per-epoch records of a training run.

    Iterate over it, index it, or read one metric with :meth:`column`.
    """

    METRICS = tuple(item.name for item in fields(EpochRecord))

    def __init__(self, records: list[EpochRecord] | None = None) -> None:
        self.records: list[EpochRecord] = list(records or [])

    def append(self, record: EpochRecord) -> None:
        """Add the record of the next epoch."""
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        if not self.records:
            return "History(0 epochs)"
        best = self.best()
        return (
            f"History({len(self)} epochs, final test accuracy {self.final.test_accuracy:.2%}, "
            f"best {best.test_accuracy:.2%} at epoch {best.epoch})"
        )

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> EpochRecord:
        return self.records[index]

    def column(self, metric: str) -> list[float]:
        """The values of one metric (``"test_accuracy"`` ...) over the epochs."""
        if metric not in self.METRICS:
            raise InvalidArgumentError(
                f"unknown metric {metric!r}; metrics: {', '.join(self.METRICS)}"
            )
        return [getattr(record, metric) for record in self.records]

    @property
    def final(self) -> EpochRecord:
        """The record of the last epoch."""
        if not self.records:
            raise InvalidArgumentError("the history is empty")
        return self.records[-1]

    def best(self, metric: str = "test_accuracy") -> EpochRecord:
        """The epoch with the best value of ``metric`` (highest accuracy, lowest loss).

        Args:
            metric: an accuracy or loss column; ties go to the earliest epoch.
        """
        values = self.column(metric)
        if not values:
            raise InvalidArgumentError("the history is empty")
        pick = min if metric.endswith("loss") else max
        return self.records[values.index(pick(values))]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"epochs": [record, ...], "best": record, "final": record}``."""
        epochs = [asdict(record) for record in self.records]
        if not epochs:
            return {"epochs": []}
        return {"epochs": epochs, "best": asdict(self.best()), "final": epochs[-1]}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls([EpochRecord(**record) for record in document.get("epochs", [])])

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temporary file, then rename)."""
        target = Path(path)
        handle, tmp_name = tempfile.mkstemp(dir=target.parent or ".", suffix=".json.tmp")
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(self.to_dict(), stream, indent=2)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: a new :class:`Model` with the trained values in the same initializers and a
            ``train`` record in its metadata; it remembers the input's source file (so
            :func:`n2nonnx.io.save` refuses to overwrite it). The input is untouched.
        history: the per-epoch records.
        module: the trained :class:`OnnxModule` (on the training device).
        data: the data set used, as resolved for the model's input.
        config: the hyper-parameters.
    """

    model: Model
    history: History = field(repr=False)
    module: OnnxModule = field(repr=False)
    data: TrainTestData = field(repr=False)
    config: TrainConfig = field(default_factory=TrainConfig)


# -------------------------------------------------------------------------------- losses


def _cross_entropy(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "probabilities":
        return torch.nn.functional.nll_loss(torch.log(output.clamp_min(1e-12)), target)
    if kind == "log_probabilities":
        return torch.nn.functional.nll_loss(output, target)
    return torch.nn.functional.cross_entropy(output, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]] = {
    "cross_entropy": _cross_entropy,
}


def output_kind(proto: onnx.ModelProto) -> str:
    """What the first graph output holds: ``"logits"``, ``"probabilities"`` (a final
    Softmax, common in Keras exports) or ``"log_probabilities"`` (a final LogSoftmax)."""
    name = proto.graph.output[0].name
    for node in proto.graph.node:
        if name in node.output:
            return {"Softmax": "probabilities", "LogSoftmax": "log_probabilities"}.get(
                node.op_type, "logits"
            )
    return "logits"


# -------------------------------------------------------------------------------- training


def train(
    model: Any,
    data: Any,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    step_size: int = 0,
    gamma: float = 0.1,
    seed: int = 0,
    loss: str = "cross_entropy",
    device: str | torch.device = "cpu",
    progress: bool = True,
    trainable: Any = None,
    data_seed: int = 0,
    eval_batch_size: int = 1024,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train a classifier given as ONNX, and return a new model holding the trained values.

    Args:
        model: a :class:`Model`, or anything :func:`n2nonnx.io.load` reads (a path, bytes,
            an ``onnx.ModelProto``, which is normalised first, e.g. un-sharing BatchNorm
            statistics that an exporter merged with other initializers). It needs one data
            input and class scores (logits, or probabilities from a final Softmax) as first
            output.
        data: anything :func:`n2nonnx.data.resolve_data` accepts: ``"mnist1d"``,
            ``"digits"``, ``"synthetic:classes=3"``, an ``.npz`` path, arrays, torch
            Datasets. Built-in data is reshaped to the model input's rank.
        epochs: passes over the training split.
        batch_size: samples per step (a last batch of one sample is skipped, since
            BatchNorm cannot train on it).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (see :data:`OPTIMIZERS`).
        lr: learning rate (the peak rate for ``"onecycle"``).
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW).
        schedule: ``None`` (constant), ``"cosine"`` (to zero over the run), ``"step"``
            (times ``gamma`` every ``step_size`` epochs) or ``"onecycle"``; stepped per batch.
        step_size: epochs between decays of ``"step"`` (0: ``epochs // 3``).
        gamma: decay factor of ``"step"``.
        seed: seeds torch, numpy and Python RNGs (restored afterwards), shuffling and
            dropout; the same seed gives identical trained weights.
        loss: ``"cross_entropy"`` (applied to log-probabilities when the graph ends in
            Softmax / LogSoftmax).
        device: torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        progress: show a tqdm bar on a terminal (never when stderr is not a TTY).
        trainable: which initializers train (see :class:`OnnxModule`).
        data_seed: seed of hold-out splits when ``data`` has no test split.
        eval_batch_size: batch size of evaluation.
        on_epoch: called with each :class:`EpochRecord` (the CLI prints them).

    Returns:
        A :class:`TrainResult`; ``.model`` keeps node and initializer names, and every
        masked weight is exactly zero.

    Raises:
        InvalidArgumentError: an unknown optimizer, schedule or loss, or a value out of range.
        DataError: the data is missing, malformed or does not fit the model.
    """
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=float(lr),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        schedule=schedule,
        step_size=int(step_size),
        gamma=float(gamma),
        seed=int(seed),
        loss=loss,
    )
    target_device = _device(device)
    if not isinstance(model, Model):
        model = io.load(model, analyze=False)
    proto = model.proto
    spec = model_input(proto)
    dataset = resolve_data(data, input_shape=spec.shape, seed=data_seed, input_name=spec.name)
    _check_classes(proto, dataset)
    input_dtype = _torch_dtype(spec.elem_type)
    kind = output_kind(proto)

    with _seeded(config.seed, target_device):
        module = OnnxModule(proto, trainable=trainable).to(target_device)
        module.apply_masks_()
        params = [param for param in module.parameters() if param.requires_grad]
        if not params:
            raise InvalidArgumentError("the model has no trainable initializer (see trainable=)")
        optimizer_ = OPTIMIZERS[config.optimizer](params, config)
        steps_per_epoch = _steps_per_epoch(len(dataset.x_train), config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        scheduler = (
            SCHEDULES[config.schedule](optimizer_, config, total_steps) if config.schedule else None
        )
        x_train = dataset.x_train.to(target_device, input_dtype)
        y_train = dataset.y_train.to(target_device)
        x_test = dataset.x_test.to(target_device, input_dtype)
        y_test = dataset.y_test.to(target_device)
        shuffler = torch.Generator().manual_seed(config.seed)
        loss_fn = partial(LOSSES[config.loss], kind=kind)
        history = History()
        bar = tqdm(total=total_steps, desc="train", unit="step", disable=None if progress else True)
        try:
            for epoch in range(1, config.epochs + 1):
                started = time.perf_counter()
                lr_now = optimizer_.param_groups[0]["lr"]
                order = torch.randperm(len(x_train), generator=shuffler).to(target_device)
                batches = [
                    order[start : start + config.batch_size]
                    for start in range(0, steps_per_epoch * config.batch_size, config.batch_size)
                ]
                train_loss, train_accuracy = _train_epoch(
                    module, optimizer_, scheduler, loss_fn, x_train, y_train, batches, bar
                )
                test_loss, test_accuracy = _evaluate(
                    module, x_test, y_test, loss_fn, eval_batch_size
                )
                record = EpochRecord(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_accuracy=train_accuracy,
                    test_loss=test_loss,
                    test_accuracy=test_accuracy,
                    lr=float(lr_now),
                    seconds=time.perf_counter() - started,
                )
                history.append(record)
                bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_accuracy:.1%}")
                if on_epoch is not None:
                    on_epoch(record)
                if not math.isfinite(train_loss):
                    raise InvalidArgumentError(
                        f"training diverged: train loss {train_loss} at epoch {epoch} with "
                        f"lr={config.lr}; lower the learning rate"
                    )
        finally:
            bar.close()

    module.eval()
    trained = module.write_back(proto)
    metadata.append_stage(
        trained,
        "train",
        data=dataset.name,
        train_samples=len(dataset.x_train),
        test_accuracy=history.final.test_accuracy,
        **asdict(config),
    )
    return TrainResult(model.with_proto(trained), history, module, dataset, config)


def evaluate(
    module: OnnxModule,
    data: TrainTestData,
    *,
    loss: str = "cross_entropy",
    batch_size: int = 1024,
    scores: str = "logits",
) -> tuple[float, float]:
    """Mean loss and accuracy of a module on the held-out split of ``data`` (eval mode).

    Args:
        module: an :class:`OnnxModule` (or any module returning class scores).
        data: the data set; its ``test`` split is scored.
        loss: a name from :data:`LOSSES`.
        batch_size: samples per forward pass.
        scores: what the module outputs (see :func:`output_kind`).

    Returns:
        ``(loss, accuracy)``, accuracy as a fraction.
    """
    device = next(iter(module.parameters()), torch.empty(0)).device
    loss_fn = partial(LOSSES[loss], kind=scores)
    return _evaluate(module, data.x_test.to(device), data.y_test.to(device), loss_fn, batch_size)


def _train_epoch(
    module: OnnxModule,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    bar: Any,
) -> tuple[float, float]:
    """One pass over ``batches`` (index tensors); masks are re-applied after every step.

    Returns:
        Mean training loss and accuracy over the samples seen.
    """
    module.train()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    seen = 0
    for index in batches:
        scores = _scores(module(x[index]))
        batch_loss = loss_fn(scores, y[index])
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        module.apply_masks_()  # masked weights stay exactly zero under momentum and decay
        if scheduler is not None:
            scheduler.step()
        loss_sum += batch_loss.detach().double() * len(index)
        correct += (scores.detach().argmax(1) == y[index]).sum()
        seen += len(index)
        bar.update(1)
    return float(loss_sum) / seen, int(correct) / seen


@torch.no_grad()
def _evaluate(
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (the module's mode is restored)."""
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(x), batch_size):
        scores = _scores(module(x[start : start + batch_size]))
        target = y[start : start + batch_size]
        loss_sum += loss_fn(scores, target).double() * len(target)
        correct += (scores.argmax(1) == target).sum()
    module.train(was_training)
    return float(loss_sum) / len(x), int(correct) / len(x)


def _scores(output: Any) -> torch.Tensor:
    """The class scores of a forward pass as ``(N, classes)``."""
    scores = output[0] if isinstance(output, tuple | list) else output
    return scores.reshape(len(scores), -1).float()


def _steps_per_epoch(samples: int, batch_size: int) -> int:
    full, rest = divmod(samples, batch_size)
    steps = full + (1 if rest > 1 else 0)
    if steps == 0:
        raise DataError(f"the training split has {samples} sample(s); need at least 2")
    return steps


def _check_classes(proto: onnx.ModelProto, dataset: TrainTestData) -> None:
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) >= 2 and dims[1].HasField("dim_value"):
        outputs = int(np.prod([dim.dim_value for dim in dims[1:]]))
        if 0 < outputs < dataset.num_classes:
            raise DataError(
                f"model output {proto.graph.output[0].name!r} has {outputs} class scores but the "
                f"labels of {dataset.name!r} go up to {dataset.num_classes - 1}; use a model with "
                f"{dataset.num_classes} outputs or relabel the data"
            )


def _torch_dtype(elem_type: int) -> torch.dtype:
    if elem_type == onnx.TensorProto.UNDEFINED:
        return torch.float32
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    if np.dtype(np_dtype).kind != "f":
        raise DataError(
            f"the model input has type {onnx.TensorProto.DataType.Name(elem_type)}; "
            f"training supports float inputs only"
        )
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def _device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device={device!r} is not a torch device ('cpu', 'cuda')"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device={device!r} requested but CUDA is not available here")
    return resolved


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch, numpy and Python RNGs for the block, and restore the caller's states."""
    devices = [device.index or 0] if device.type == "cuda" else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
