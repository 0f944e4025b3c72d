"""N2NSkip options: :class:`SkipOptions`, their choices, the authors' code preset, model-free checks.

This module imports nothing heavy: the command line builds the N2NSkip options of ``skip``,
``prune --n2nskip`` and ``run`` from these fields while printing ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.fields import option, values

DEFAULT_SAMPLING = "block"
DEFAULT_MIN_PAIR_WEIGHTS = 1
SAMPLING_MODES = ("block", "uniform", "channel")
PLACEMENTS = ("random", "connectivity")
SKIP_NORMS = ("none", "batchnorm")
POOL_AT = ("source", "output")
MERGES = ("target", "pair")
JOINS = ("activation", "preact")
SPREADS = ("proportional", "equal")
KERNELS = ("target", "1x1")
POOLS = ("max", "avg")
PAIR_NAMES = ("all", "blocks")

AUTHORS_VARIANT = {
    "pairs": "blocks",
    "sampling": "channel",
    "skip_norm": "batchnorm",
    "pool_at": "output",
    "join": "activation",
    "kernel": "target",
    "pool": "max",
}
"""Options of :func:`~n2nonnx.skip.add_n2nskip` that reproduce the skips of the authors' VGG code."""


_CHOICES = {
    "merge": MERGES,
    "join": JOINS,
    "placement": PLACEMENTS,
    "skip_norm": SKIP_NORMS,
    "pool_at": POOL_AT,
    "sampling": SAMPLING_MODES,
    "spread": SPREADS,
    "kernel": KERNELS,
    "pool": POOLS,
}


@dataclass(frozen=True)
class SkipOptions:
    """The options of :func:`~n2nonnx.skip.add_n2nskip` but the density, validated when made.

    Field order is the order of ``add_n2nskip``'s keyword arguments as the command line
    passes them (:meth:`kwargs`). ``pairs``, ``per_target``, ``kernel`` and ``pool`` decide
    which layer pairs qualify (:func:`~n2nonnx.skip.find_pairs` checks names and numbers
    against the model).
    """

    skip_share: float = option(
        0.5,
        "part of the non-zero budget spent on skip weights, in [0, 1)",
        "SHARE",
        parse="share",
    )
    pairs: Any = option(
        "all",
        "all: every non-consecutive pair whose shapes align; blocks: each conv block's "
        "input to the next block's first conv (the authors' VGG code; needs two conv blocks)",
        choices=PAIR_NAMES,
    )
    per_target: int | None = option(
        None, "at most N (nearest) sources per target layer", "N", parse="int"
    )
    spread: str = option(
        "proportional",
        "split the skip budget by the pairs' dense sizes, or equally",
        choices=SPREADS,
    )
    min_pair_weights: int = option(
        DEFAULT_MIN_PAIR_WEIGHTS,
        "drop the pairs that would hold fewer than N skip weights (each costs a Gather, a "
        "conv or MatMul and an Add) and give their weights to the kept pairs; the skip budget "
        "is unchanged (1: keep every pair)",
        "N",
        parse="int",
    )
    sampling: str = option(
        DEFAULT_SAMPLING,
        "block: connections on a random subset of source units (fast); "
        "uniform: uniformly random as in the paper; channel: whole kernels of "
        "int(C_in x density) random source channels per target channel (the authors' code)",
        choices=SAMPLING_MODES,
    )
    placement: str = option(
        "random",
        "random (the paper); connectivity: first give units of the pruned graph their "
        "missing input / output paths and join cut-off components, then the rest at random "
        "(none out of the graph inputs); the same number of non-zeros",
        choices=PLACEMENTS,
    )
    merge: str = option(
        "target",
        "target: one skip layer per target over its concatenated sources (fast); "
        "pair: one skip layer per pair, summed",
        choices=MERGES,
    )
    join: str = option(
        "activation",
        "add into the input of the target's nonlinearity (after BatchNorm) "
        "or into its raw output (before BatchNorm)",
        choices=JOINS,
    )
    kernel: str = option(
        "target", "skip conv kernel: the target's kernel size, or 1x1", choices=KERNELS
    )
    pool: str = option(
        "max", "spatial alignment pooling (max, as in the authors' code)", choices=POOLS
    )
    pool_at: str = option(
        "source",
        "source: pool the source to the target's size before the skip conv (cheapest); "
        "output: skip conv at the block input's size, max-pool after the activation "
        "(the authors' code)",
        choices=POOL_AT,
    )
    skip_norm: str = option(
        "none",
        "batchnorm: the skip path gets its own BatchNorm between its conv and its "
        "activation (the authors' code)",
        choices=SKIP_NORMS,
    )
    init_scale: float = option(
        1.0, "multiplier of the Kaiming-normal initial skip weights", "SCALE", parse="float"
    )
    seed: int = option(0, "seed of every random choice", "N")

    def __post_init__(self) -> None:
        check_numbers(None, self.skip_share, self.init_scale)
        check_choices(**{name: getattr(self, name) for name in _CHOICES})
        per_target = self.per_target
        if per_target is not None and (
            isinstance(per_target, bool) or not isinstance(per_target, Integral) or per_target < 1
        ):
            raise InvalidArgumentError(
                f"per_target={per_target!r}: give a positive integer (or None for no limit)"
            )
        minimum = self.min_pair_weights
        if isinstance(minimum, bool) or not isinstance(minimum, Integral) or minimum < 1:
            raise InvalidArgumentError(
                f"min_pair_weights={minimum!r}: give an integer >= 1 (1: keep every pair)"
            )
        if isinstance(self.pairs, str) and self.pairs not in PAIR_NAMES:
            raise InvalidArgumentError(
                f"pairs={self.pairs!r}: use 'all', 'blocks', a maximum k (int >= 2) or a list of "
                "(source, target)"
            )

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~n2nonnx.skip.add_n2nskip` (all but ``density``)."""
        return values(self)

    def pair_options(self) -> dict[str, Any]:
        """``pairs``, ``per_target``, ``kernel``, ``pool``: the arguments of :func:`~n2nonnx.skip.find_pairs`."""
        return {name: getattr(self, name) for name in ("pairs", "per_target", "kernel", "pool")}


SKIP_FIELDS = tuple(item.name for item in fields(SkipOptions))


def check_options(**options: Any) -> None:
    """Refuse a bad :func:`~n2nonnx.skip.add_n2nskip` option before any work (no model needed).

    Checks what :class:`SkipOptions` checks (the choice options, ``pairs`` given as a
    string, ``per_target``, ``min_pair_weights``, ``skip_share`` and ``init_scale``); other keys are left to
    :func:`~n2nonnx.skip.add_n2nskip`.

    Args:
        options: keyword arguments meant for :func:`~n2nonnx.skip.add_n2nskip`.

    Raises:
        InvalidArgumentError: a value :func:`~n2nonnx.skip.add_n2nskip` would refuse.
    """
    known = {k: v for k, v in options.items() if k in SKIP_FIELDS}
    SkipOptions(**known)


def check_choices(**values: str) -> None:
    """Refuse a value of a choice option outside its choices.

    Args:
        values: option name (a key of the choices table) -> value.

    Raises:
        InvalidArgumentError: a value outside its choices.
    """
    for name, value in values.items():
        allowed = _CHOICES[name]
        if value not in allowed:
            raise InvalidArgumentError(
                f"{name}={value!r}: choose one of {', '.join(repr(a) for a in allowed)}"
            )


def check_numbers(density: Any, skip_share: Any, init_scale: Any) -> None:
    """Refuse ``density``, ``skip_share`` or ``init_scale`` out of range.

    Args:
        density: the total density in (0, 1], or None (the model's own).
        skip_share: the skip part of the budget, in [0, 1).
        init_scale: the multiplier of the initial skip weights, finite and >= 0.

    Raises:
        InvalidArgumentError: the first bad value, with its range.
    """
    if not isinstance(skip_share, (int, float)) or not 0.0 <= float(skip_share) < 1.0:
        raise InvalidArgumentError(
            f"skip_share={skip_share!r} must be in [0, 1) (0.5: half the budget to skips)"
        )
    if density is not None and (
        not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0
    ):
        raise InvalidArgumentError(f"density={density!r} must be in (0, 1]")
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, (int, float))
        or not 0 <= init_scale < float("inf")
    ):
        raise InvalidArgumentError(f"init_scale={init_scale!r} must be a finite number >= 0")
