"""The training loop: run the model's own ONNX graph in PyTorch and write the trained values back.

:func:`train` runs the graph (:class:`~n2nonnx.backend.OnnxModule`), keeps every masked
weight exactly zero after each optimizer step, evaluates on the held-out split after each
epoch, and writes the trained values (BatchNorm running statistics included) back into the
same initializers of a new model. A hook may follow every optimizer step (``on_step``,
receiving a :class:`~n2nonnx.training.hooks.StepInfo`) and every epoch (``on_epoch``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import onnx
import torch
from tqdm.auto import tqdm

from n2nonnx import io, metadata
from n2nonnx.backend import OnnxModule
from n2nonnx.data import TrainTestData, check_classes, model_input, resolve_data
from n2nonnx.errors import DataError, InvalidArgumentError, TrainingDivergedError
from n2nonnx.model import Model
from n2nonnx.training import distributed as parallel
from n2nonnx.training.batchnorm import recalibrate_after_training
from n2nonnx.training.config import TrainConfig
from n2nonnx.training.devices import resolve_device, seeded, torch_dtype
from n2nonnx.training.history import EpochRecord, History
from n2nonnx.training.hooks import StepInfo
from n2nonnx.training.losses import LOSSES, output_kind, score_model
from n2nonnx.training.optim import OPTIMIZERS, SCHEDULES
from n2nonnx.training.sync_bn import synchronised_batch_norm

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
    on_step: Callable[[StepInfo], None] | None = None,
    distributed: bool | None = None,
    sync_bn: bool = False,
    recalibrate_bn: bool = True,
    wrap_module: Callable[[OnnxModule], torch.nn.Module] | None = None,
    sample_order: Callable[[int], torch.Tensor] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a classifier given as ONNX, and return a new model holding the trained values.

    Under ``torchrun`` (or inside an initialised process group) the processes train one
    model together with DistributedDataParallel (see :mod:`n2nonnx.training.distributed`):
    ``batch_size`` is then the global batch, split evenly over the processes; the data is
    sharded per epoch; metrics are summed over all processes; only rank 0 logs, shows
    progress and calls ``on_epoch``. Every process returns the same model; only one should
    save it (``distributed.context().is_main``).

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
        device: torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``); with several
            processes a bare ``"cuda"`` means ``cuda:<LOCAL_RANK>``.
        progress: show a tqdm bar (never when stderr is not a terminal).
        trainable: which initializers train (see :class:`OnnxModule`).
        data_seed: seed of hold-out splits when ``data`` has no test split.
        eval_batch_size: batch size of evaluation (per process).
        on_epoch: called with each :class:`EpochRecord` (the CLI prints them), on rank 0 only.
        on_step: called after every optimizer step with a :class:`StepInfo` (the step's
            index, epoch, batch loss, learning rate and the module), once the masks are
            re-applied and the schedule has advanced, before the next batch; on every
            process (a hook that changes the module must do the same on each). It may
            change the module's buffers or the tensors of ``wrap_module``'s wrapper (SCL
            updates its mask variables here); changing the trained parameters themselves
            bypasses the optimizer.
        distributed: ``None`` (default): train with the other processes when launched by
            ``torchrun`` or inside a process group; ``True``: require that; ``False``: alone.
        sync_bn: compute BatchNorm batch statistics over all processes' samples (see
            :mod:`n2nonnx.training.sync_bn`); without it each process normalises with its
            own samples, as DDP does. No effect in a single process.
        recalibrate_bn: after the last epoch, set every BatchNorm's running statistics to
            the exact eval-mode statistics of the training inputs, layer by layer, with the
            weights fixed (see :mod:`n2nonnx.training.batchnorm`); the final epoch's test
            figures are then those of the recalibrated model. Without it the exponential
            averages of training are kept, which can ruin eval-mode accuracy where sparse
            layers leave near-constant channels.
        wrap_module: builds the module the forward passes run through (training and
            evaluation) from the :class:`OnnxModule`, e.g. one that swaps its mask buffers
            for learned gates (:class:`~n2nonnx.scl.search.GatedModule`). The optimizer
            steps the OnnxModule's trainable parameters only; masks, BatchNorm
            recalibration and write-back use the OnnxModule. One process only.
        sample_order: ``epoch (from 0) -> a permutation of the training samples`` (an
            integer tensor) that the epoch's batches are cut from, instead of the seeded
            sampler (:class:`~n2nonnx.training.shards.Shards`). One process only.
        options: fields of :class:`TrainConfig` overriding ``recipe`` (``epochs=5``,
            ``optimizer="sgd"``, ``lr=0.05`` ...). A last batch of one sample is skipped,
            since BatchNorm cannot train on it.

    Returns:
        A :class:`TrainResult`; ``.model`` keeps node and initializer names, and every
        masked weight is exactly zero.

    Raises:
        InvalidArgumentError: an unknown option, or a value out of range.
        DataError: the data is missing, malformed or does not fit the model (with several
            processes: on any of them, raised on all, naming the rank).
    """
    config = TrainConfig.from_options(recipe, **options)
    ctx = parallel.join(distributed, device)
    with parallel.all_or_none(ctx):  # a failure on any rank stops every rank here, before training
        target_device = resolve_device(parallel.device_for(device, ctx))
        if not isinstance(model, Model):
            model = io.load(model, analyze=False)
        proto = score_model(model.proto)  # the class-score output alone
        spec = model_input(proto)
        dataset = resolve_data(data, input_shape=spec.shape, seed=data_seed, input_name=spec.name)
        check_classes(proto, dataset)
        input_dtype = torch_dtype(spec.elem_type)
        kind = output_kind(proto)
        shards = parallel.Shards(
            len(dataset.x_train), parallel.per_rank_batch(config.batch_size, ctx), config.seed, ctx
        )
        if shards.steps == 0:
            raise DataError(
                f"the training split has {len(dataset.x_train)} sample(s); need at least "
                f"2 per process"
            )
        with seeded(config.seed, target_device):
            module = OnnxModule(proto, trainable=trainable).to(target_device)
            forward_module = module if wrap_module is None else wrap_module(module)
        params = [param for param in module.parameters() if param.requires_grad]
        if not params:
            raise InvalidArgumentError("the model has no trainable initializer (see trainable=)")
        if ctx.active and (wrap_module is not None or sample_order is not None):
            raise InvalidArgumentError(
                "wrap_module= and sample_order= train in one process only; pass distributed=False"
            )
    if ctx.active:
        parallel.check_same_inputs(ctx, _fingerprint(proto, dataset), "model or data")
    if sync_bn and not ctx.active:
        log.info("sync_bn has no effect in a single process")

    # dropout differs per process; shuffling is shared through the sampler's seed
    with seeded(config.seed + ctx.rank, target_device):
        module.apply_masks_()
        x_train = dataset.x_train.to(target_device, input_dtype)
        y_train = dataset.y_train.to(target_device)
        held_out = parallel.held_out_slice(len(dataset.x_test), ctx)
        x_test = dataset.x_test[held_out].to(target_device, input_dtype)
        y_test = dataset.y_test[held_out].to(target_device)
        loss_fn = partial(LOSSES[config.loss], kind=kind)
        stepper = forward_module
        if ctx.active:
            unused = parallel.unused_parameters(module, x_train[:2], loss_fn, y_train[:2])
            if unused and ctx.is_main:
                log.info(
                    "%d parameter(s) get no gradient (e.g. %s); DDP will look for unused "
                    "parameters at every step",
                    len(unused),
                    unused[0],
                )
            stepper = parallel.wrap(
                module, ctx, find_unused=bool(unused) or parallel.has_control_flow(proto)
            )
        optimizer_ = OPTIMIZERS[config.optimizer](params, config)
        total_steps = shards.steps * config.epochs
        scheduler = SCHEDULES[config.schedule](optimizer_, config, total_steps)
        history = History()
        step = _Step(
            stepper, module, optimizer_, scheduler, loss_fn, sync_bn and ctx.active, on_step
        )
        bar = tqdm(
            total=total_steps,
            desc="train",
            unit="step",
            disable=None if progress and ctx.is_main else True,
        )
        try:
            for epoch in range(1, config.epochs + 1):
                started = time.perf_counter()
                lr_now = optimizer_.param_groups[0]["lr"]
                if sample_order is None:
                    batches = [index.to(target_device) for index in shards.epoch(epoch - 1)]
                else:
                    batches = _cut(sample_order(epoch - 1).to(target_device), shards)
                train_sums = _train_epoch(step, x_train, y_train, batches, bar, epoch)
                train_loss, train_accuracy = _means(parallel.sum_across(ctx, *train_sums))
                parallel.broadcast_buffers(module, ctx)  # rank 0's running statistics everywhere
                test_sums = _evaluate_sums(forward_module, x_test, y_test, loss_fn, eval_batch_size)
                test_loss, test_accuracy = _means(parallel.sum_across(ctx, *test_sums))
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
                if ctx.is_main:
                    log.info("%s", record.summary(config.epochs))
                    if on_epoch is not None:
                        on_epoch(record)
                if not math.isfinite(train_loss):  # the same reduced value on every rank
                    raise TrainingDivergedError(
                        f"training diverged: train loss {train_loss} at epoch {epoch} with "
                        f"lr={config.lr}; lower the learning rate"
                    )
        finally:
            bar.close()

    bn_record: dict[str, Any] = {}
    if recalibrate_bn:  # exact eval-mode BatchNorm statistics for the final weights
        bn_record = recalibrate_after_training(
            module,
            x_train,
            history,
            batch_size=eval_batch_size,
            seed=config.seed,
            evaluate=lambda: _means(
                parallel.sum_across(
                    ctx, *_evaluate_sums(forward_module, x_test, y_test, loss_fn, eval_batch_size)
                )
            ),
        )
        parallel.broadcast_buffers(module, ctx)  # the same statistics on every rank
    module.eval()
    trained = module.write_back(model.proto)
    record_extra: dict[str, Any] = (
        {"processes": ctx.world_size, "sync_bn": sync_bn} if ctx.active else {}
    )
    metadata.append_stage(
        trained,
        "train",
        data=dataset.name,
        train_samples=len(dataset.x_train),
        test_accuracy=history.final.test_accuracy,
        **asdict(config),
        **record_extra,
        **bn_record,
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


@dataclass
class _Step:
    """One optimizer step through ``stepper`` (DDP, or the module itself), masks re-applied.

    Masks are applied on ``module`` (DDP's ``.module``); its own forward would skip the
    gradient all-reduce, so it is only used for masks, evaluation and write-back.
    """

    stepper: torch.nn.Module
    module: OnnxModule
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sync_bn: bool
    on_step: Callable[[StepInfo], None] | None = None
    taken: int = 0  # steps taken so far in the run

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lr = float(self.optimizer.param_groups[0]["lr"]) if self.on_step is not None else 0.0
        with synchronised_batch_norm(self.sync_bn):
            scores = _scores(self.stepper(x))
        batch_loss = self.loss_fn(scores, y)
        self.optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        self.optimizer.step()
        self.module.apply_masks_()  # masked weights stay exactly zero under momentum and decay
        if self.scheduler is not None:
            self.scheduler.step()
        if self.on_step is not None:
            self.on_step(StepInfo(self.taken, epoch, batch_loss.detach(), len(y), lr, self.module))
        self.taken += 1
        return batch_loss.detach(), scores.detach()


def _train_epoch(
    step: _Step,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    bar: Any,
    epoch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over ``batches`` (index tensors); masks are re-applied after every step.

    Returns:
        Sums over the samples seen: loss, correct predictions, samples.
    """
    step.stepper.train()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    seen = 0
    for index in batches:
        batch_loss, scores = step(x[index], y[index], epoch)
        loss_sum += batch_loss.double() * len(index)
        correct += (scores.argmax(1) == y[index]).sum()
        seen += len(index)
        bar.update(1)
    return loss_sum, correct, torch.tensor(seen, device=x.device)


@torch.no_grad()
def _evaluate_sums(
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums of loss, correct predictions and samples in eval mode (the module's mode is restored)."""
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
    return loss_sum, correct, torch.tensor(len(x), device=x.device)


def _evaluate(
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (the module's mode is restored)."""
    return _means(_evaluate_sums(module, x, y, loss_fn, batch_size))


def _cut(order: torch.Tensor, shards: parallel.Shards) -> list[torch.Tensor]:
    """The epoch's batches from a permutation of the samples, as many and as large as ``shards``'."""
    return [
        order[start : start + shards.batch]
        for start in range(0, shards.steps * shards.batch, shards.batch)
    ]


def _means(sums: Any) -> tuple[float, float]:
    """(mean loss, accuracy) from sums of loss, correct predictions and samples."""
    loss_sum, correct, count = (float(value) for value in sums)
    return loss_sum / count, correct / count


def _scores(output: Any) -> torch.Tensor:
    """The class scores of a forward pass as ``(N, classes)``."""
    scores = output[0] if isinstance(output, tuple | list) else output
    return scores.reshape(len(scores), -1).float()


def _fingerprint(proto: onnx.ModelProto, dataset: TrainTestData) -> tuple[str, str]:
    """Digests of what every rank must read alike: the graph's structure and the data bytes.

    Initializer values need not match: DDP broadcasts rank 0's.
    """
    graph = hashlib.blake2b(digest_size=8)
    for node in proto.graph.node:
        graph.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)};".encode())
    for tensor in proto.graph.initializer:
        graph.update(f"{tensor.name}{list(tensor.dims)};".encode())
    data = hashlib.blake2b(digest_size=8)
    for split in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        data.update(str(tuple(split.shape)).encode())
        data.update(split.contiguous().numpy().tobytes())
    return graph.hexdigest(), data.hexdigest()
