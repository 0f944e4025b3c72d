"""BatchNorm statistics re-estimated after training, the way evaluation will see them.

During training the running statistics are an exponential average over batches whose
weights kept changing, taken while every *earlier* BatchNorm normalised with its batch
statistics. Both differ from what evaluation sees, and sparse networks make the difference
matter: a channel with no (or almost no) input is near-constant, its variance falls far
below ``epsilon``, and evaluation multiplies any offset between its running mean and its
actual value by up to ``1 / sqrt(epsilon)`` (316 at the default). Downstream BatchNorms
then read inputs whose distribution no longer matches their statistics, and the error
compounds layer after layer.

:func:`recalibrate_batchnorm` sets each BatchNorm's running mean and variance to the exact
mean and (population) variance of its input over the training samples, layer by layer in
the order the forward pass reaches them, with the module in **eval mode**: when layer
``k`` is measured, layers ``1..k-1`` already normalise with their recalibrated statistics,
exactly as at inference. One pass per BatchNorm, each stopped at the layer it measures.
Weights are not touched. Channels whose variance over the data is below ``epsilon`` are
reported as near-constant.

Exact statistics make eval mode agree with batch statistics in PyTorch, but a sparse
network can keep chains of near-constant channels that do not depend on the input at all
(only on the position, through padding): each of their BatchNorms subtracts a mean from a
value almost equal to it and multiplies the difference by about ``1 / sqrt(epsilon)``, so
the rounding of another runtime (onnxruntime sums convolutions in another order) is
amplified layer after layer, and the same file scores differently there. With
``stabilise`` (the default) such channels, input-independent and with a variance below
``epsilon / 100``, get a running variance of ``1 - epsilon``: they no longer amplify, their
output is their shift plus a negligible pattern, and the later layers are measured with
them in that state. They carried no information about the input.

BatchNormalization nodes are found as the ``torch.nn.functional.batch_norm`` calls of the
forward pass (a ``TorchFunctionMode``), so this works on any module built of kernels that
call it, :class:`~n2nonnx.backend.OnnxModule` included. Nodes with ``training_mode=1``
(ONNX training graphs) do not call it and are left alone.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from n2nonnx.errors import InvalidArgumentError

if TYPE_CHECKING:
    from n2nonnx.training.history import History

log = logging.getLogger(__name__)

_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)
# A channel is input-independent when its spread over samples, at each position, is below
# 1e-5 of its magnitude (variance ratio 1e-10): float32 rounding, not signal.
_INPUT_INDEPENDENT = 1e-10
# Input-independent channels are stabilised when their variance is below epsilon / 100:
# their BatchNorm then amplifies by nearly the full 1 / sqrt(epsilon). Above that (still
# below epsilon) stabilising them cost accuracy in our measurements and bought no agreement.
_STABILISE_BELOW = 1e-2


@dataclass(frozen=True)
class LayerCalibration:
    """One BatchNorm's recalibration.

    Attributes:
        name: the initializer name of its running mean (or ``"batchnorm <k>"`` when the
            module does not name it).
        channels: its channel count.
        near_constant: channels whose variance over the data is below ``epsilon``.
        constant: channels whose variance is exactly zero (no input reaches them).
        input_independent: near-constant channels whose value does not depend on the
            sample (beyond float rounding), only on the position.
        stabilised: of those, the channels whose running variance was raised to ``1 - eps``.
        largest_shift: the largest ``|new mean - old mean| / sqrt(old var + epsilon)``
            over the channels: how far off evaluation was, in units of its own scale.
    """

    name: str
    channels: int
    near_constant: int
    constant: int
    input_independent: int
    stabilised: int
    largest_shift: float


@dataclass(frozen=True)
class Calibration:
    """What :func:`recalibrate_batchnorm` did.

    Attributes:
        samples: training samples the statistics were measured on.
        layers: one record per recalibrated BatchNorm, in forward order.
    """

    samples: int
    layers: list[LayerCalibration] = field(default_factory=list)

    @property
    def near_constant(self) -> int:
        """Near-constant channels over all layers."""
        return sum(layer.near_constant for layer in self.layers)

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary for a provenance record."""
        return {
            "method": "exact eval-mode statistics, layer by layer",
            "samples": self.samples,
            "layers": len(self.layers),
            "near_constant_channels": {
                layer.name: layer.near_constant for layer in self.layers if layer.near_constant
            },
            "stabilised_channels": {
                layer.name: layer.stabilised for layer in self.layers if layer.stabilised
            },
            "largest_shift": round(
                max((layer.largest_shift for layer in self.layers), default=0.0), 4
            ),
        }


class _Stop(Exception):
    """Raised inside the forward pass once the measured BatchNorm has been reached."""


def _bound(args: tuple, kwargs: dict | None) -> dict[str, Any]:
    bound = _BATCH_NORM_SIGNATURE.bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    return bound.arguments


class _FindBatchNorms(TorchFunctionMode):
    """Records the running-statistic buffers of every ``F.batch_norm`` call, in call order."""

    def __init__(self, buffers: set[int]) -> None:
        super().__init__()
        self.buffers = buffers
        self.calls: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if func is F.batch_norm:
            values = _bound(args, kwargs)
            mean, var = values["running_mean"], values["running_var"]
            if (
                mean is not None
                and var is not None
                and id(mean) in self.buffers
                and id(var) in self.buffers
            ):
                self.calls.append((mean, var, float(values["eps"])))
        return func(*args, **(kwargs or {}))


class _MeasureInput(TorchFunctionMode):
    """Accumulates sums of the input of the BatchNorm owning ``target``, per channel and position.

    Sums are taken over samples, per (channel, position), around a shift (the first
    batch's values) in float64: a constant channel gets a variance of exactly zero, and
    a channel whose value does not depend on the sample is told apart from one that
    does. With ``stop``, the forward pass is abandoned once the input is measured.
    """

    def __init__(self, target: torch.Tensor, stop: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.target = target
        self.stop = stop
        self.dtype = dtype
        self.shift: torch.Tensor | None = None
        self.sum = self.squares = torch.zeros(0)
        self.count = 0

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if func is F.batch_norm:
            values = _bound(args, kwargs)
            if values["running_mean"] is self.target:
                self._add(values["input"].detach())
                if self.stop:
                    raise _Stop
        return func(*args, **(kwargs or {}))

    def _add(self, x: torch.Tensor) -> None:
        x = x.to(self.dtype)
        if self.shift is None:
            self.shift = x.mean(0)
            self.sum = torch.zeros_like(self.shift)
            self.squares = torch.zeros_like(self.shift)
        if x.shape[1:] != self.shift.shape:
            raise InvalidArgumentError(
                f"a BatchNorm input changed shape between batches ({tuple(self.shift.shape)} -> "
                f"{tuple(x.shape[1:])}); recalibrate with inputs of one shape"
            )
        centred = x - self.shift
        self.sum += centred.sum(0)
        self.squares += centred.square().sum(0)
        self.count += len(x)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per channel: mean, population variance, and the part of it between samples."""
        if self.shift is None or self.count == 0:
            raise InvalidArgumentError("a BatchNorm was not reached by the recalibration pass")
        offset = self.sum / self.count
        within = (self.squares / self.count - offset.square()).clamp_min(
            0
        )  # over samples, per position
        position_mean = (self.shift + offset).reshape(len(offset), -1)
        mean = position_mean.mean(1)
        between_samples = within.reshape(len(offset), -1).mean(1)
        variance = between_samples + position_mean.var(1, unbiased=False)
        return mean, variance, between_samples


def _names_by_buffer(module: torch.nn.Module) -> dict[int, str]:
    """id(buffer) -> a readable name: the ONNX initializer name where the module knows it."""
    names = {id(buffer): name for name, buffer in module.named_buffers()}
    tensor_of = getattr(module, "tensor", None)
    for name in getattr(module, "initializer_names", []):
        if callable(tensor_of):
            names[id(tensor_of(name))] = name
    return names


def _sample(x: torch.Tensor, max_samples: int | None, seed: int) -> torch.Tensor:
    if max_samples is None or len(x) <= max_samples:
        return x
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(x), generator=generator)[:max_samples].sort().values
    return x[index.to(x.device)]


@torch.no_grad()
def recalibrate_batchnorm(
    module: torch.nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    max_samples: int | None = 16384,
    seed: int = 0,
    stabilise: bool = True,
) -> Calibration:
    """Set every BatchNorm's running statistics to the exact eval-mode statistics of ``x``.

    Layer by layer in forward order, with the module in eval mode, each BatchNorm's
    running mean and variance become the mean and population variance of its input over
    ``x`` (earlier layers already use their new statistics). Weights are unchanged; the
    module's train/eval mode is restored.

    Args:
        module: the trained module (an :class:`~n2nonnx.backend.OnnxModule`, or any module
            whose BatchNorms call ``torch.nn.functional.batch_norm`` with their running
            statistics as registered buffers).
        x: training inputs, on the module's device and in its input dtype.
        batch_size: samples per forward pass.
        max_samples: measure on at most this many samples (a seeded random subset);
            ``None``: all of them. Each BatchNorm costs one partial pass.
        seed: seed of the subset.
        stabilise: give input-independent near-constant channels a running variance of
            ``1 - epsilon`` (see the module's description); ``False``: exact statistics only.

    Returns:
        A :class:`Calibration` (no layers when the module has no BatchNorm).

    Raises:
        InvalidArgumentError: ``batch_size`` or ``max_samples`` below 1, or ``x`` empty.
    """
    if batch_size < 1 or (max_samples is not None and max_samples < 1):
        raise InvalidArgumentError(
            f"batch_size={batch_size} and max_samples={max_samples} must be >= 1"
        )
    if len(x) == 0:
        raise InvalidArgumentError("recalibrating BatchNorm needs at least one training sample")
    was_training = module.training
    module.eval()
    try:
        return _recalibrate(module, _sample(x, max_samples, seed), batch_size, stabilise)
    finally:
        module.train(was_training)


def _recalibrate(
    module: torch.nn.Module, x: torch.Tensor, batch_size: int, stabilise: bool
) -> Calibration:
    finder = _FindBatchNorms({id(buffer) for buffer in module.buffers()})
    with finder:
        module(x[:1])
    uses: dict[int, int] = {}
    for mean, _, _ in finder.calls:
        uses[id(mean)] = uses.get(id(mean), 0) + 1
    names = _names_by_buffer(module)
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    layers: list[LayerCalibration] = []
    done: set[int] = set()
    for index, (running_mean, running_var, eps) in enumerate(finder.calls):
        if id(running_mean) in done:
            continue
        done.add(id(running_mean))
        measure = _MeasureInput(running_mean, stop=uses[id(running_mean)] == 1, dtype=dtype)
        for start in range(0, len(x), batch_size):
            try:
                with measure:
                    module(x[start : start + batch_size])
            except _Stop:
                pass
        mean, variance, between_samples = measure.statistics()
        old_scale = (running_var.to(dtype) + eps).sqrt()
        shift = float(((mean - running_mean.to(dtype)).abs() / old_scale).max())
        near_constant = variance < eps
        # no dependence on the sample beyond float rounding: the channel carries no signal
        independent = near_constant & (
            between_samples <= _INPUT_INDEPENDENT * (mean.square() + variance)
        )
        fixed = independent & (variance < _STABILISE_BELOW * eps)
        running_mean.copy_(mean.to(running_mean.dtype))
        stored = (
            torch.where(fixed, torch.clamp_min(variance, 1.0 - eps), variance)
            if stabilise
            else variance
        )
        running_var.copy_(stored.to(running_var.dtype))
        layers.append(
            LayerCalibration(
                name=names.get(id(running_mean), f"batchnorm {index}"),
                channels=len(mean),
                near_constant=int(near_constant.sum()),
                constant=int((variance == 0).sum()),
                input_independent=int(independent.sum()),
                stabilised=int(fixed.sum()) if stabilise else 0,
                largest_shift=shift,
            )
        )
    calibration = Calibration(len(x), layers)
    if calibration.near_constant:
        log.info(
            "%d BatchNorm channel(s) are near-constant over the training data (variance below "
            "epsilon; %s): they carry almost no signal (n2nonnx deploy removes those that no "
            "input reaches where it can fold their constant)",
            calibration.near_constant,
            ", ".join(
                f"{layer.name}: {layer.near_constant}/{layer.channels}"
                for layer in layers
                if layer.near_constant
            ),
        )
    return calibration


def recalibrate_after_training(
    module: torch.nn.Module,
    x_train: torch.Tensor,
    history: History,
    evaluate: Callable[[], tuple[float, float]],
    *,
    batch_size: int = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """The trainer's last step: recalibrate, re-score, and describe it for the provenance.

    After :func:`recalibrate_batchnorm`, the held-out split is scored again with
    ``evaluate`` and the final record of ``history`` gets the new test loss and accuracy,
    so that it describes the model that is returned.

    Args:
        module: the trained module.
        x_train: the training inputs, on the module's device and in its input dtype.
        history: the run's history (its final record is replaced in place).
        evaluate: returns ``(test loss, test accuracy)`` of ``module`` in eval mode.
        batch_size: samples per forward pass.
        seed: seed of the subset of a large training split.

    Returns:
        ``{"batchnorm_recalibration": {...}}`` for the ``train`` record, or ``{}`` when
        the module has no BatchNorm.
    """
    calibration = recalibrate_batchnorm(module, x_train, batch_size=batch_size, seed=seed)
    if not calibration.layers:
        return {}
    before = history.final
    test_loss, test_accuracy = evaluate()
    history.records[-1] = replace(before, test_loss=test_loss, test_accuracy=test_accuracy)
    log.info(
        "BatchNorm statistics recalibrated (%d layers, %d samples): test accuracy %.2f%% -> %.2f%%",
        len(calibration.layers),
        calibration.samples,
        100 * before.test_accuracy,
        100 * test_accuracy,
    )
    record = calibration.record()
    record["test_accuracy_before"] = before.test_accuracy
    return {"batchnorm_recalibration": record}
