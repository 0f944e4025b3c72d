"""The search phase: train theta and the mask variables together on the model's own graph.

The ONNX graph already computes ``W * Cast(mask)`` for every masked weight (see
:mod:`n2nonnx.graph.masking`). :class:`GatedModule` runs the graph with each mask buffer
swapped for ``step(m)`` (``torch.func.functional_call``), so the forward pass computes
``theta * step(m)`` and the backward pass delivers ``dL/dw * theta`` to ``m`` through the
Identity STE. The backend is not changed: outside the search the module is an ordinary
masked :class:`~n2nonnx.backend.OnnxModule`. The training loop is
:func:`n2nonnx.training.train`'s; the masks move in its per-step hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from n2nonnx.backend import OnnxModule
from n2nonnx.data import TrainTestData
from n2nonnx.errors import TrainingDivergedError
from n2nonnx.model import Model
from n2nonnx.scl.controller import FixedLambda, TargetDensity, lambda_of
from n2nonnx.scl.ste import normalise_per_unit, step_ste
from n2nonnx.training import EpochRecord, TrainConfig, train
from n2nonnx.training.hooks import StepInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One weight whose connections SCL learns.

    Attributes:
        weight: the weight initializer's name.
        layer: the layer's name.
        unit_axis: the weight axis of output units (normalisation groups).
        is_skip: an N2NSkip weight.
    """

    weight: str
    layer: str
    unit_axis: int
    is_skip: bool


class GatedModule(torch.nn.Module):
    """An :class:`OnnxModule` whose mask buffers are replaced by ``step(m)`` on every forward.

    Args:
        module: the module of a model in which every candidate weight is masked.
        candidates: the weights to gate.
        mask_init: the initial value of every mask variable.
        normalisation: how mask gradients are normalised per unit (see :func:`normalise_per_unit`).
    """

    def __init__(
        self,
        module: OnnxModule,
        candidates: list[Candidate],
        mask_init: float,
        normalisation: str = "rms",
    ) -> None:
        super().__init__()
        self.normalisation = normalisation
        self.module = module
        self.candidates = list(candidates)
        self.mask_values = torch.nn.ParameterList()
        self._buffer_keys: list[str] = []
        for candidate in self.candidates:
            theta = module.tensor(candidate.weight)
            values = torch.full(
                theta.shape, float(mask_init), dtype=theta.dtype, device=theta.device
            )
            self.mask_values.append(torch.nn.Parameter(values))
            self._buffer_keys.append(module.parameter_key(module.mask_of[candidate.weight]))

    def forward(self, *inputs: Any) -> Any:
        """Run the graph with ``theta * step(m)`` for every candidate weight."""
        gates = {
            key: step_ste(values)
            for key, values in zip(self._buffer_keys, self.mask_values, strict=True)
        }
        return torch.func.functional_call(self.module, gates, inputs)

    def theta(self) -> list[torch.nn.Parameter]:
        """The module's trainable parameters (weights, biases, scales; not the masks)."""
        return [param for param in self.module.parameters() if param.requires_grad]

    def kept(self) -> int:
        """Connections on (``m > 0``) over every candidate."""
        return int(sum(int((values > 0).sum()) for values in self.mask_values))


@dataclass
class SearchTrace:
    """What the search did, step by step and epoch by epoch."""

    lambdas: list[float] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    records: list[EpochRecord] = field(default_factory=list)


def search(
    model: Model,
    dataset: TrainTestData,
    config: TrainConfig,
    controller: FixedLambda | TargetDensity,
    candidates: list[Candidate],
    *,
    mask_init: float,
    mask_lr: float,
    normalisation: str = "rms",
    device: torch.device,
    progress: bool = False,
    eval_batch_size: int = 1024,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> tuple[GatedModule, SearchTrace]:
    """Train theta (the recipe's optimizer and schedule) and ``m`` (plain SGD) together.

    One step: forward with ``theta * step(m)``; backward; theta takes an optimizer step
    (weight decay, if any, acts on theta only); each mask gradient is normalised per output
    unit (:func:`normalise_per_unit`) and ``m <- m - mask_lr * (g + lambda)``, lambda from
    ``controller``. The loop is :func:`n2nonnx.training.train`'s, in one process: the
    forward passes run through the :class:`GatedModule` (``wrap_module``), the masks move
    in its per-step hook (``on_step``), and the samples are shuffled by one generator
    seeded with the recipe's seed, a new permutation each epoch (``sample_order``).

    Args:
        model: the model, every candidate weight masked (the masks are the gates' places).
        dataset: the data (already fitted to the model input).
        config: the recipe of the search phase (``epochs`` = search epochs).
        controller: chooses lambda at each step.
        candidates: the weights to gate.
        mask_init: the initial value of every mask variable.
        mask_lr: learning rate of the mask variables.
        normalisation: how mask gradients are normalised per unit (see :func:`normalise_per_unit`).
        device: where to train.
        progress: show a progress bar.
        eval_batch_size: batch size of the per-epoch evaluation.
        on_epoch: called with each epoch's record.

    Returns:
        The gated module (theta and ``m`` as trained) and the search's traces: lambda and
        kept connections per step, the epoch records.

    Raises:
        TrainingDivergedError: the loss became non-finite.
    """
    trace = SearchTrace()
    gates: list[GatedModule] = []
    shuffler = torch.Generator().manual_seed(config.seed)

    def gate(module: OnnxModule) -> GatedModule:
        gates.append(GatedModule(module, candidates, mask_init, normalisation))
        return gates[-1]

    def shuffled(epoch: int) -> torch.Tensor:
        return torch.randperm(len(dataset.x_train), generator=shuffler)

    def after_step(info: StepInfo) -> None:
        gated = gates[0]
        shift = _update_masks(gated, controller, info.step, mask_lr)
        for values in gated.mask_values:
            values.grad = None
        trace.lambdas.append(lambda_of(shift, mask_lr))
        trace.kept.append(gated.kept())

    def after_epoch(record: EpochRecord) -> None:
        trace.records.append(record)
        log.info("scl search  lambda %.3g  kept %d", trace.lambdas[-1], trace.kept[-1])
        if on_epoch is not None:
            on_epoch(record)

    try:
        train(
            model,
            dataset,
            config,
            device=device,
            progress=progress,
            eval_batch_size=eval_batch_size,
            on_epoch=after_epoch,
            on_step=after_step,
            distributed=False,
            recalibrate_bn=False,
            wrap_module=gate,
            sample_order=shuffled,
        )
    except TrainingDivergedError as error:
        raise TrainingDivergedError(f"SCL search: {error}") from error
    return gates[0], trace


@torch.no_grad()
def _update_masks(
    gated: GatedModule, controller: FixedLambda | TargetDensity, step: int, mask_lr: float
) -> float:
    """``m <- m - mask_lr * (normalised g + lambda)``; returns the shift ``mask_lr * lambda``."""
    proposals = []
    for candidate, values in zip(gated.candidates, gated.mask_values, strict=True):
        grad = values.grad if values.grad is not None else torch.zeros_like(values)
        proposals.append(
            values - mask_lr * normalise_per_unit(grad, candidate.unit_axis, gated.normalisation)
        )
    shift = controller.shift(step, proposals, mask_lr)
    for values, proposal in zip(gated.mask_values, proposals, strict=True):
        values.copy_(proposal - shift)
    return shift


def search_steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimisation steps per epoch (a last batch of one sample is skipped, as in training)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest > 1 else 0)
