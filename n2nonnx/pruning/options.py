"""Options of pruning at initialization: :class:`PruneOptions`, the method and allocation names.

This module imports nothing heavy: the command line builds ``n2nonnx prune``'s options from
these fields while printing ``--help``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.fields import integer, number, option

# Names of the registry in n2nonnx.pruning.criteria (aliases included), listed here so that
# the CLI offers them without importing numpy or torch; a test keeps them equal.
AT_INIT_METHODS = ("random", "expander", "magnitude", "snip", "csp", "grasp", "synflow")
ALLOCATIONS = ("global", "uniform", "erk")
SYNFLOW_PRECISIONS = ("float64", "float32")

#: criterion option -> the field of :class:`PruneOptions` that holds it
CRITERION_OPTIONS = ("temperature", "iterations", "samples_per_class", "precision")


@dataclass(frozen=True)
class PruneOptions:
    """What :func:`n2nonnx.pruning.prune` does, validated when made.

    The criterion options (``temperature`` ... ``precision``) are None for the criterion's
    own default (GraSP's temperature 200 and 10 samples per class, SynFlow's 100 rounds in
    float64); the ones given are recorded in the ``prune`` record.
    """

    method: str = option("snip", "pruning criterion (see above)")
    density: float = option(0.1, "fraction of the prunable weights kept, in (0, 1]", "D")
    allocation: str = option("global", "how the budget is split over layers", choices=ALLOCATIONS)
    batch_size: int = option(128, "SNIP's and GraSP's scoring batch", "N")
    seed: int = option(0, "seed of every random choice", "N")
    exclude: tuple[str, ...] = option(
        (), "leave layers matching a name / glob / regex dense (repeatable)", "PATTERN"
    )
    first_last_density: float | None = option(
        None, "keep the first and last layers at this density", "D", parse="fraction"
    )
    temperature: float | None = option(
        None, "GraSP logit temperature", "T", parse="float", cli_default=200.0
    )
    iterations: int | None = option(
        None, "SynFlow rounds", "N", parse="positive_int", cli_default=100
    )
    samples_per_class: int | None = option(None, "GraSP samples per class", "N")
    precision: str | None = option(None, "SynFlow's arithmetic", choices=SYNFLOW_PRECISIONS)
    rescale: bool = option(False, "scale each unit's kept weights by sqrt(fan-in / kept fan-in)")
    repair: bool = option(False, "move the kept weights on dead paths onto live paths")
    extra: Mapping[str, Any] | None = option(
        None, "further options for a criterion registered outside n2nonnx"
    )

    def __post_init__(self) -> None:
        if not isinstance(self.method, str):
            raise InvalidArgumentError(f"method must be a criterion name, got {self.method!r}")
        density = self.density
        if (
            isinstance(density, bool)
            or not isinstance(density, (int, float))
            or not 0 < density <= 1
        ):
            raise InvalidArgumentError(
                f"density must be in (0, 1] (the fraction of weights kept), got {density!r}; "
                "for 5% of the weights use 0.05"
            )
        if self.allocation not in ALLOCATIONS:
            raise InvalidArgumentError(
                f"unknown allocation {self.allocation!r}; choose from {', '.join(ALLOCATIONS)}"
            )
        if self.first_last_density is not None and not (
            number(self.first_last_density) and 0 < self.first_last_density <= 1
        ):
            raise InvalidArgumentError(
                f"--first-last-density must be in (0, 1], got {self.first_last_density!r}"
            )
        exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        object.__setattr__(self, "exclude", exclude)
        checks = [
            ("batch size", self.batch_size, integer(self.batch_size, 1), "an integer >= 1"),
            ("temperature", self.temperature, _positive(self.temperature), "a number > 0"),
            ("iterations", self.iterations, _at_least_one(self.iterations), "an integer >= 1"),
            (
                "samples per class",
                self.samples_per_class,
                _at_least_one(self.samples_per_class),
                "an integer >= 1",
            ),
            (
                "precision",
                self.precision,
                self.precision is None or self.precision in SYNFLOW_PRECISIONS,
                f"one of {', '.join(SYNFLOW_PRECISIONS)}",
            ),
        ]
        for what, value, ok, expected in checks:
            if not ok:
                raise InvalidArgumentError(f"{what} must be {expected}, got {value!r}")

    @classmethod
    def from_call(
        cls, criterion_options: Mapping[str, Any] | None = None, **fields: Any
    ) -> PruneOptions:
        """The options of a :func:`~n2nonnx.pruning.prune` call (its ``options=`` mapping split out).

        Args:
            criterion_options: ``temperature``, ``iterations``, ``samples_per_class``,
                ``precision``; other keys (a criterion of one's own) go to ``extra``.
            fields: the other fields.

        Returns:
            The validated options.
        """
        given = dict(criterion_options or {})
        known = {k: given.pop(k) for k in CRITERION_OPTIONS if k in given}
        return cls(**fields, **known, extra=given or None)

    @property
    def criterion_options(self) -> dict[str, Any]:
        """The criterion options given (None ones left out, ``extra`` after): what criteria read."""
        given = {
            name: getattr(self, name)
            for name in CRITERION_OPTIONS
            if getattr(self, name) is not None
        }
        return {**given, **dict(self.extra or {})}


def _positive(value: Any) -> bool:
    return value is None or (number(value) and value > 0)


def _at_least_one(value: Any) -> bool:
    return value is None or integer(value, 1)
