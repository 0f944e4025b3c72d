"""Options of SCL (learned masks): :class:`SclOptions` and the constants its defaults come from.

This module imports nothing heavy: the command line builds ``n2nonnx prune``'s SCL options
from these fields while printing ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.fields import number, option

NORMALISATIONS = ("rms", "norm")  # n2nonnx.scl.ste.NORMALISATIONS, without importing torch
#: target-mode schedule defaults (n2nonnx.scl.controller.WARMUP / REACH, without importing torch)
WARMUP, REACH = 0.1, 0.75
#: initial value of every mask variable: a small positive constant, so every connection
#: starts on and can be switched off after about ``MASK_INIT / MASK_LR`` steps of push
MASK_INIT = 0.05
#: learning rate of the mask variables (plain SGD on per-unit normalised gradients)
MASK_LR = 0.005


@dataclass(frozen=True)
class SclOptions:
    """The mask-learning options of :func:`~n2nonnx.scl.learn_masks`, validated when made.

    Exactly one of ``density`` (target mode) and ``scl_lambda`` (free mode) is given. The
    training recipe of theta is a :class:`~n2nonnx.training.TrainConfig`, apart.
    """

    density: float | None = option(
        None, "target mode: the fraction of connections kept, in (0, 1]", "D"
    )
    scl_lambda: float | None = option(
        None,
        "free mode: the regulariser weight; the density is what is learned (instead of --density)",
        "L",
        parse="float",
    )
    search_fraction: float = option(
        0.5,
        "share of the epochs spent learning masks; the rest trains with them frozen",
        "F",
        parse="float",
    )
    mask_init: float = option(
        MASK_INIT,
        "initial value of every mask variable (> 0: every connection starts on)",
        "M",
        parse="float",
    )
    mask_lr: float = option(MASK_LR, "SGD rate of the mask variables", "RATE", parse="float")
    max_lambda: float | None = option(None, "upper bound of lambda in target mode", "L")
    normalisation: str = option(
        "rms", "per-unit normalisation of the mask gradient", choices=NORMALISATIONS
    )
    warmup: float = option(WARMUP, "target mode: fraction of the search with lambda = 0")
    reach: float = option(REACH, "target mode: fraction of the search that reaches the target")
    exclude: tuple[str, ...] = option(
        (), "layer or weight names / patterns left dense and out of the count", "PATTERN"
    )
    device: str = option("cpu", "torch device of SCL's training")

    def __post_init__(self) -> None:
        _check_mode(self.density, self.scl_lambda)
        _check_positive("search_fraction", self.search_fraction, upper=1.0)
        _check_positive("mask_init", self.mask_init)
        _check_positive("mask_lr", self.mask_lr)
        if self.max_lambda is not None and not (number(self.max_lambda) and self.max_lambda >= 0):
            raise InvalidArgumentError(
                f"max_lambda={self.max_lambda!r} must be a number >= 0 (or None: unbounded)"
            )
        if self.normalisation not in NORMALISATIONS:
            raise InvalidArgumentError(
                f"normalisation={self.normalisation!r}: choose one of {list(NORMALISATIONS)}"
            )
        if not (number(self.warmup) and number(self.reach) and 0 <= self.warmup < self.reach <= 1):
            raise InvalidArgumentError(
                f"warmup={self.warmup!r} and reach={self.reach!r} must satisfy "
                "0 <= warmup < reach <= 1"
            )
        exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        object.__setattr__(self, "exclude", exclude)

    @property
    def mode(self) -> str:
        """``target`` (a density is given) or ``free`` (a lambda is)."""
        return "target" if self.density is not None else "free"


def _check_mode(density: Any, scl_lambda: Any) -> None:
    if density is not None and scl_lambda is not None:
        raise InvalidArgumentError(
            "give density= (target mode: lambda is steered to reach it) or scl_lambda= (free mode), not both"
        )
    if density is None and scl_lambda is None:
        raise InvalidArgumentError(
            "SCL needs density= (target mode, e.g. 0.05) or scl_lambda= (free mode, e.g. 0.5)"
        )
    if density is not None and not (number(density) and 0 < density <= 1):
        raise InvalidArgumentError(
            f"density must be in (0, 1] (the fraction of weights kept), got {density!r}; for 5% use 0.05"
        )
    if scl_lambda is not None and not (number(scl_lambda) and scl_lambda >= 0):
        raise InvalidArgumentError(
            f"scl_lambda={scl_lambda!r} must be a number >= 0 (the weight of the connection count); "
            "a negative weight would reward connections"
        )


def _check_positive(name: str, value: Any, upper: float | None = None) -> None:
    if not (number(value) and value > 0 and (upper is None or value <= upper)):
        bound = f"in (0, {upper:g}]" if upper is not None else "a number > 0"
        raise InvalidArgumentError(f"{name}={value!r} must be {bound}")
