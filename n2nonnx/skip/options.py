"""N2NSkip options: their choices, the authors' code preset, and checks that need no model."""

from __future__ import annotations

from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.skip.sampling import SAMPLING_MODES

DEFAULT_SAMPLING = "block"
PLACEMENTS = ("random", "connectivity")
SKIP_NORMS = ("none", "batchnorm")
POOL_AT = ("source", "output")

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
    "merge": ("target", "pair"),
    "join": ("activation", "preact"),
    "placement": PLACEMENTS,
    "skip_norm": SKIP_NORMS,
    "pool_at": POOL_AT,
    "sampling": SAMPLING_MODES,
    "spread": ("proportional", "equal"),
    "kernel": ("target", "1x1"),
    "pool": ("max", "avg"),
}


def check_options(**options: Any) -> None:
    """Refuse a bad :func:`~n2nonnx.skip.add_n2nskip` option before any work (no model needed).

    Checks the choice options (``sampling``, ``placement``, ``skip_norm``, ``pool_at``,
    ``merge``, ``join``, ``spread``, ``kernel``, ``pool``), ``pairs`` given as a string,
    ``skip_share`` and ``init_scale``; other keys are left to :func:`~n2nonnx.skip.add_n2nskip`.

    Args:
        options: keyword arguments meant for :func:`~n2nonnx.skip.add_n2nskip`.

    Raises:
        InvalidArgumentError: a value :func:`~n2nonnx.skip.add_n2nskip` would refuse.
    """
    check_choices(**{k: v for k, v in options.items() if k in _CHOICES})
    pairs = options.get("pairs", "all")
    if isinstance(pairs, str) and pairs not in ("all", "blocks"):
        raise InvalidArgumentError(
            f"pairs={pairs!r}: use 'all', 'blocks', a maximum k (int >= 2) or a list of "
            "(source, target)"
        )
    check_numbers(None, options.get("skip_share", 0.5), options.get("init_scale", 1.0))


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
