"""Options of structured pruning: :class:`StructuredOptions`, the method and estimator names.

This module imports nothing heavy: the command line builds the structured options of
``n2nonnx prune`` from these fields while printing ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.fields import integer, number, option

# Names of the registries (n2nonnx.structured.orders, .estimators), listed here so that the
# CLI offers them without importing numpy; a test keeps them equal.
METHODS = ("snacs", "l1", "random")
ESTIMATOR_NAMES = ("edge", "knn", "binned")
PHI_NAMES = ("w", "w2", "exp")
LIMIT_RULES = ("lstsq", "svm")
#: the names n2nonnx.prune and ``n2nonnx prune --method`` give the methods (``random`` is
#: also a criterion at initialization) -> the structured method
PRUNE_NAMES = {"snacs": "snacs", "l1-filter": "l1", "random-filter": "random"}

#: Fine-tuning recipe of the authors' retraining code (SGD, momentum 0.9, lr 1e-3, batch 128,
#: weight decay 1e-4, constant rate over short runs).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.9,
    "batch_size": 128,
    "weight_decay": 1e-4,
    "schedule": "none",
}


@dataclass(frozen=True)
class StructuredOptions:
    """What :func:`~n2nonnx.structured.prune_structured` does, validated when made.

    Exactly one prune level is given: ``prune_percent`` (removed) or ``target_params``
    (kept). ``upper_limit`` given as text (``"0.75"``, from the command line) becomes a number.
    The SNACS options (``groups`` ... ``protect``) are ignored by ``l1`` and ``random``.
    """

    method: str = option("snacs", "structured method", choices=METHODS)
    prune_percent: float | None = option(
        None, "percent of the model's parameters removed, 0 < P < 100", "P", parse="float"
    )
    target_params: float | None = option(
        None, "or: fraction of the parameters kept, 0 < F < 1", "F", parse="float"
    )
    groups: int = option(8, "SNACS groups of units per layer", "N", parse="positive_int")
    samples_per_class: int = option(
        250,
        "samples per class the activations are collected on",
        "N",
        parse="positive_int",
    )
    phi: str = option(
        "w", "weight scaling of connection scores: w, w^2 or exp(-w^2/2)", choices=PHI_NAMES
    )
    estimator: str = option(
        "edge", "conditional mutual information estimator", choices=ESTIMATOR_NAMES
    )
    upper_limit: str | float = option(
        "lstsq",
        "per-layer pruning limit: classifier sweep (least squares or linear SVM) "
        "or a fixed fraction",
        "{" + ",".join(LIMIT_RULES) + ",FRACTION}",
        parse="str",
    )
    rule: float = option(
        0.7,
        "limit = largest share with accuracy >= max - R (max - min)",
        "R",
        flag="--limit-rule",
        parse="float",
    )
    protect: float = option(
        0.75,
        "share of each layer's most sensitive units never removed (0 disables; "
        "at 0.75 SNACS removes at most about 25-35%% of the parameters)",
        "F",
        parse="float",
    )
    align: int = option(
        16,
        "round every layer's kept unit count to a multiple of N, the parameter target still "
        "met (onnxruntime's fast convolutions block channels by 16); 0 keeps exact counts",
        "N",
        parse="int",
    )
    seed: int = option(0, "seed of the sample draw, the estimator, the SVM and random pruning")
    finetune_epochs: int = option(
        0, "fine-tune the slimmed model on --data for N epochs", "N", parse="int"
    )

    def __post_init__(self) -> None:
        if isinstance(self.upper_limit, str) and self.upper_limit not in LIMIT_RULES:
            try:
                object.__setattr__(self, "upper_limit", float(self.upper_limit))
            except ValueError:
                raise InvalidArgumentError(
                    f"upper_limit must be {' or '.join(LIMIT_RULES)} or a fraction in (0, 1], "
                    f"got {self.upper_limit!r}"
                ) from None
        _check(self)

    @property
    def kept_fraction(self) -> float:
        """The fraction of the parameters to keep (from either prune level)."""
        if self.target_params is not None:
            return float(self.target_params)
        return 1 - float(self.prune_percent or 0) / 100.0

    def record(self) -> dict[str, Any]:
        """The options written into the ``structured_prune`` record (SNACS's only for SNACS)."""
        snacs = (
            {
                "groups": self.groups,
                "samples_per_class": self.samples_per_class,
                "phi": self.phi,
                "estimator": self.estimator,
                "upper_limit": self.upper_limit,
                "rule": self.rule,
                "protect": self.protect,
            }
            if self.method == "snacs"
            else {}
        )
        return {
            "prune_percent": self.prune_percent,
            "target_params": self.target_params,
            "align": self.align,
            **snacs,
            "seed": self.seed,
        }


def _check(options: StructuredOptions) -> None:  # noqa: C901  (one check per field)
    if options.method not in METHODS:
        raise InvalidArgumentError(
            f"unknown structured pruning method {options.method!r}; choose from {', '.join(METHODS)}"
        )
    prune_percent, target_params = options.prune_percent, options.target_params
    if (prune_percent is None) == (target_params is None):
        raise InvalidArgumentError(
            "give exactly one prune level: prune_percent (--prune-percent) or "
            "target_params (--target-params)"
        )
    if prune_percent is not None and not (number(prune_percent) and 0 < prune_percent < 100):
        raise InvalidArgumentError(
            f"prune_percent must be in (0, 100) (percent of parameters removed), got {prune_percent!r}"
        )
    if target_params is not None and not (number(target_params) and 0 < target_params < 1):
        raise InvalidArgumentError(
            f"target_params must be in (0, 1) (fraction of parameters kept), got {target_params!r}"
        )
    if not (isinstance(options.groups, int) and options.groups >= 1):
        raise InvalidArgumentError(f"groups must be an integer >= 1, got {options.groups!r}")
    if not (isinstance(options.samples_per_class, int) and options.samples_per_class >= 2):
        raise InvalidArgumentError(
            f"samples_per_class must be an integer >= 2, got {options.samples_per_class!r}"
        )
    if options.phi not in PHI_NAMES:
        raise InvalidArgumentError(
            f"unknown phi {options.phi!r}; choose from {', '.join(PHI_NAMES)}"
        )
    if options.estimator not in ESTIMATOR_NAMES:
        raise InvalidArgumentError(
            f"unknown MI estimator {options.estimator!r}; choose from {', '.join(ESTIMATOR_NAMES)}"
        )
    limit = options.upper_limit
    if not isinstance(limit, str) and not (number(limit) and 0 < limit <= 1):
        raise InvalidArgumentError(
            f"upper_limit as a number must be a fraction in (0, 1], got {limit!r}"
        )
    if (
        not (isinstance(options.align, int) and not isinstance(options.align, bool))
        or options.align < 0
    ):
        raise InvalidArgumentError(
            f"align must be an integer >= 0 (0: exact unit counts), got {options.align!r}"
        )
    if not (number(options.rule) and 0 <= options.rule <= 1):
        raise InvalidArgumentError(f"rule must be in [0, 1], got {options.rule!r}")
    if not (number(options.protect) and 0 <= options.protect < 1):
        raise InvalidArgumentError(
            f"protect must be in [0, 1) (fraction of each layer's units kept), got {options.protect!r}"
        )
    if not integer(options.finetune_epochs, 0):
        raise InvalidArgumentError(
            f"finetune_epochs must be an integer >= 0, got {options.finetune_epochs!r}"
        )
