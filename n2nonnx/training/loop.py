"""The training loop: run the model's own ONNX graph in PyTorch and write the trained values back.

:func:`train` runs the graph (:class:`~n2nonnx.backend.OnnxModule`), keeps every masked
weight exactly zero after each optimizer step, evaluates on the held-out split after each
epoch, and writes the trained values (BatchNorm running statistics included) back into the
same initializers of a new model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from n2nonnx import io, metadata
from n2nonnx.backend import OnnxModule
from n2nonnx.data import TrainTestData, model_input, resolve_data
from n2nonnx.errors import DataError, InvalidArgumentError, TrainingDivergedError
from n2nonnx.model import Model
from n2nonnx.training.config import TrainConfig
from n2nonnx.training.devices import resolve_device, seeded, torch_dtype
from n2nonnx.training.history import EpochRecord, History
from n2nonnx.training.losses import LOSSES, output_kind
from n2nonnx.training.optim import OPTIMIZERS, SCHEDULES

log = logging.getLogger(__name__)


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


def train(
    model: Any,
    data: Any,
    recipe: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    trainable: Any = None,
    data_seed: int = 0,
    eval_batch_size: int = 1024,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    **options: Any,
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
        recipe: the hyper-parameters (default :class:`TrainConfig`'s defaults).
        device: torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        progress: show a tqdm bar (never when stderr is not a terminal).
        trainable: which initializers train (see :class:`OnnxModule`).
        data_seed: seed of hold-out splits when ``data`` has no test split.
        eval_batch_size: batch size of evaluation.
        on_epoch: called with each :class:`EpochRecord` (the CLI prints them).
        options: fields of :class:`TrainConfig` overriding ``recipe`` (``epochs=5``,
            ``optimizer="sgd"``, ``lr=0.05`` ...). A last batch of one sample is skipped,
            since BatchNorm cannot train on it.

    Returns:
        A :class:`TrainResult`; ``.model`` keeps node and initializer names, and every
        masked weight is exactly zero.

    Raises:
        InvalidArgumentError: an unknown option, or a value out of range.
        DataError: the data is missing, malformed or does not fit the model.
    """
    config = TrainConfig.from_options(recipe, **options)
    target_device = resolve_device(device)
    if not isinstance(model, Model):
        model = io.load(model, analyze=False)
    proto = model.proto
    spec = model_input(proto)
    dataset = resolve_data(data, input_shape=spec.shape, seed=data_seed, input_name=spec.name)
    _check_classes(proto, dataset)
    input_dtype = torch_dtype(spec.elem_type)
    kind = output_kind(proto)

    with seeded(config.seed, target_device):
        module = OnnxModule(proto, trainable=trainable).to(target_device)
        module.apply_masks_()
        params = [param for param in module.parameters() if param.requires_grad]
        if not params:
            raise InvalidArgumentError("the model has no trainable initializer (see trainable=)")
        optimizer_ = OPTIMIZERS[config.optimizer](params, config)
        steps_per_epoch = _steps_per_epoch(len(dataset.x_train), config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        scheduler = SCHEDULES[config.schedule](optimizer_, config, total_steps)
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
                test_loss, test_accuracy = _evaluate(module, x_test, y_test, loss_fn, eval_batch_size)
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
                log.info("%s", record.summary(config.epochs))
                if on_epoch is not None:
                    on_epoch(record)
                if not math.isfinite(train_loss):
                    raise TrainingDivergedError(
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

