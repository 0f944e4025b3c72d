"""The training recipe: one dataclass whose defaults and help texts every verb shares.

``n2nonnx train``, ``run`` and ``study`` build their training options from the fields of
:class:`TrainConfig` (see :mod:`n2nonnx.cli.options`), so a default is defined here once.
This module imports no torch: the CLI reads it to print ``--help`` quickly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from n2nonnx.errors import InvalidArgumentError

# Names of the registries in optim.py / losses.py, listed here so that the CLI can offer
# them as choices without importing torch; a test keeps them equal to the registries.
OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
SCHEDULE_NAMES = ("none", "cosine", "step", "onecycle")
LOSS_NAMES = ("cross_entropy",)


def _option(
    default: Any, help: str, metavar: str | None = None, choices: tuple[str, ...] | None = None
) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (validated; recorded in the model's metadata).

    The defaults are the recipe the study found to train sparse plain MLPs and CNNs alike
    (Adam 1e-3 with a cosine schedule; SGD at lr 0.05 left the deep sparse MLP at chance).
    """

    epochs: int = _option(20, "passes over the training data", "N")
    batch_size: int = _option(128, "samples per step", "N")
    optimizer: str = _option("adam", "optimizer", choices=OPTIMIZER_NAMES)
    lr: float = _option(1e-3, "learning rate (the peak rate for onecycle)", "RATE")
    momentum: float = _option(0.9, "SGD momentum", "M")
    weight_decay: float = _option(0.0, "L2 (sgd, adam) or decoupled (adamw) weight decay", "W")
    schedule: str = _option(
        "cosine", "learning-rate schedule, stepped per batch", choices=SCHEDULE_NAMES
    )
    step_size: int = _option(0, "epochs between 'step' decays (0: epochs // 3)", "EPOCHS")
    gamma: float = _option(0.1, "decay factor of the 'step' schedule", "FACTOR")
    seed: int = _option(0, "seed of initial shuffling, dropout and every RNG", "N")
    loss: str = _option(
        "cross_entropy", "loss (on log-probabilities after a final Softmax)", choices=LOSS_NAMES
    )

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
            self.optimizer in OPTIMIZER_NAMES,
            "optimizer",
            self.optimizer,
            f"one of {list(OPTIMIZER_NAMES)}",
        )
        _require(_finite(self.lr) and 0 < self.lr <= 1e30, "lr", self.lr, "a number in (0, 1e30]")
        _require(
            _finite(self.momentum) and 0 <= self.momentum < 1,
            "momentum",
            self.momentum,
            "in [0, 1)",
        )
        _require(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            "a number >= 0",
        )
        _require(
            self.schedule in SCHEDULE_NAMES,
            "schedule",
            self.schedule,
            f"one of {list(SCHEDULE_NAMES)}",
        )
        _require(
            isinstance(self.step_size, int) and self.step_size >= 0,
            "step_size",
            self.step_size,
            "an integer >= 0 (0: epochs // 3)",
        )
        _require(_finite(self.gamma) and 0 < self.gamma <= 1, "gamma", self.gamma, "in (0, 1]")
        _require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**63,
            "seed",
            self.seed,
            "an integer in [0, 2**63)",
        )
        _require(self.loss in LOSS_NAMES, "loss", self.loss, f"one of {list(LOSS_NAMES)}")
        if self.step_size == 0:
            object.__setattr__(self, "step_size", max(1, self.epochs // 3))

    @classmethod
    def from_options(cls, base: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``base`` (or the defaults) with some fields replaced; unknown names are refused.

        Args:
            base: the recipe to start from.
            options: field name -> value (``None`` values are ignored).

        Returns:
            A validated recipe.

        Raises:
            InvalidArgumentError: an unknown field or a value out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown training option(s) {unknown}; known: {sorted(known)}"
            )
        values = {f.name: getattr(base, f.name) for f in fields(cls)} if base else {}
        values.update({k: v for k, v in options.items() if v is not None})
        if base is not None and "step_size" not in options and values.get("epochs") != base.epochs:
            values["step_size"] = 0  # derived from the new epoch count
        return cls(**values)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidArgumentError(f"{name}={value!r} is not valid; expected {expected}")
