"""The study's grid: variants, the options it can vary, architectures and widths, cells.

Pure Python (no numpy, torch or onnx), so the ``study`` verb's ``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.training.config import TrainConfig

if TYPE_CHECKING:
    from n2nonnx.pipeline import JobConfig

# variant -> (pruning method, allocation of the sequential budget, skip share)
VARIANTS: dict[str, tuple[str, str, float]] = {
    "dense": ("dense", "global", 0.0),
    "RP": ("expander", "erk", 0.0),
    "N2NSkip-RP": ("expander", "erk", 0.5),
    "CSP": ("snip", "global", 0.0),
    "N2NSkip-CSP": ("snip", "global", 0.5),
    "SCL": ("scl", "global", 0.0),  # masks learned during the recipe's epochs (allocation unused)
    "N2NSkip-SCL": ("scl", "global", 0.5),
}
# The paper's comparison; SCL variants on request (--variants ... SCL N2NSkip-SCL).
DEFAULT_VARIANTS = ("dense", "RP", "N2NSkip-RP", "CSP", "N2NSkip-CSP")


@dataclass(frozen=True)
class Factor:
    """A choice the study can vary: each cell is keyed by the values it was run with.

    Attributes:
        default: the value of a cell that does not name the factor (the variant's own
            value where that is None: its allocation, its skip share).
        scope: ``"init"``: every variant pruned at initialisation; ``"skip"``: every
            N2NSkip variant.
        job_field: the :class:`~n2nonnx.pipeline.JobConfig` field it sets, or None for an
            option of :func:`n2nonnx.skip.add_n2nskip`.
        choices: the allowed values (None: any number in [0, 1)).
    """

    default: Any
    scope: str
    job_field: str | None
    choices: tuple[Any, ...] | None = None


FACTORS: dict[str, Factor] = {
    "allocation": Factor(None, "init", "allocation", ("erk", "uniform", "global")),
    "repair": Factor(False, "init", "repair", (False, True)),
    "skip_share": Factor(None, "skip", "skip_share"),
    "sampling": Factor("block", "skip", "sampling", ("block", "uniform", "channel")),
    "join": Factor("activation", "skip", None, ("activation", "preact")),
    "placement": Factor("random", "skip", None, ("random", "connectivity")),
    "skip_norm": Factor("none", "skip", None, ("none", "batchnorm")),
    "pairs": Factor("all", "skip", None, ("all", "blocks")),
    "pool_at": Factor("source", "skip", None, ("source", "output")),
}
# The authors' code skips (see n2nonnx.skip.AUTHORS_VARIANT) as a variant's options.
AUTHORS_OPTIONS = "pairs=blocks,sampling=channel,skip_norm=batchnorm,pool_at=output"


def parse_factor(name: str, text: str) -> Any:
    """A factor's value from its text (``on``/``off`` for yes-no factors).

    Raises:
        InvalidArgumentError: an unknown factor or a value it does not take.
    """
    factor = _factor(name)
    if factor.choices is None:
        try:
            value: Any = float(text)
        except ValueError:
            value = None
        if value is None or not 0 <= value < 1:
            raise InvalidArgumentError(f"{name} must be a number in [0, 1), got {text!r}")
        return value
    if factor.choices == (False, True):
        if text not in ("on", "off"):
            raise InvalidArgumentError(f"{name} is on or off, got {text!r}")
        return text == "on"
    if text not in factor.choices:
        raise InvalidArgumentError(
            f"{name} {text!r} is not one of {', '.join(map(str, factor.choices))}"
        )
    return text


def _factor(name: str) -> Factor:
    """The factor called ``name``; an unknown name is refused with the known ones."""
    if name not in FACTORS:
        raise InvalidArgumentError(
            f"unknown study option {name!r}; choose from {', '.join(FACTORS)}"
        )
    return FACTORS[name]


def _check_factor(name: str, value: Any) -> None:
    """Refuse an unknown factor or a value it does not take."""
    factor = _factor(name)
    if factor.choices is None:
        allowed = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
    else:
        allowed = value in factor.choices
    if not allowed:
        raise InvalidArgumentError(f"study option {name}={value!r} is not allowed")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``N2NSkip-RP:placement=connectivity,repair=on`` -> (variant, options).

    Raises:
        InvalidArgumentError: an unknown variant, factor or value, or a factor that does not
            apply to the variant.
    """
    name, _, rest = spec.partition(":")
    if name not in VARIANTS:
        raise InvalidArgumentError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    options = {}
    for item in filter(None, rest.split(",")):
        key, equals, text = item.partition("=")
        if not equals:
            raise InvalidArgumentError(f"variant {spec!r}: {item!r} is not OPTION=VALUE")
        key = key.replace("-", "_")
        options[key] = parse_factor(key, text)
        if not _applies(key, name):
            raise InvalidArgumentError(f"variant {spec!r}: {key} does not apply to {name}")
    return name, options


def _applies(factor: str, variant: str) -> bool:
    method, _, share = VARIANTS[variant]
    if FACTORS[factor].scope == "skip":
        return share > 0
    return method not in ("dense", "scl")


def _own_default(factor: str, variant: str) -> Any:
    """The value a cell of ``variant`` has when it does not name ``factor``."""
    default = FACTORS[factor].default
    if default is not None:
        return default
    _, allocation, share = VARIANTS[variant]
    return {"allocation": allocation, "skip_share": share}[factor]


# The study's architectures (zoo factory, options, the options scaled by --width): a deep
# MLP and a VGG-style 1-D CNN, deep enough that sparse sequential chains can break (the
# regime N2NSkip targets).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {"hidden": [256] * 8}),
    "vgg1d": ("vgg1d", {"widths": [32, 32, 64, 64, 128, 128], "pool_after": [1, 3]}),
}
_WIDTH_OPTION = {"mlp": "hidden", "vgg1d": "widths"}
#: the largest width multiplier: the MLP's layers at 4096 units (~134M weights, 0.5 GiB)
MAX_WIDTH = 16
# One recipe for every cell: Adam trains the deep plain MLP, where SGD at lr 0.05 does not.
STUDY_RECIPE: dict[str, Any] = {
    k: v for k, v in asdict(TrainConfig(epochs=15)).items() if k != "seed"
}


def arch_name(arch: str, width: float) -> str:
    """``vgg1d`` at width 1, ``vgg1d-x2`` at width 2 (every layer twice as wide)."""
    return arch if width == 1 else f"{arch}-x{width:g}"


def arch_spec(name: str) -> tuple[str, dict[str, Any]]:
    """(zoo factory, options) of a study architecture name such as ``vgg1d-x2``.

    Raises:
        InvalidArgumentError: an unknown architecture or a malformed width.
    """
    base, _, width = name.partition("-x")
    if base not in ARCHS:
        raise InvalidArgumentError(
            f"unknown study architecture {base!r}; choose from {', '.join(ARCHS)}"
        )
    factory, options = ARCHS[base]
    if not width:
        return factory, dict(options)
    try:
        scale = float(width)
    except ValueError:
        scale = 0.0
    if not scale > 0:
        raise InvalidArgumentError(f"architecture {name!r}: the width after -x must be > 0")
    if not scale <= MAX_WIDTH:
        raise InvalidArgumentError(
            f"width {width} is more than {MAX_WIDTH:g}: {base} at width {MAX_WIDTH:g} already "
            f"has layers of {MAX_WIDTH * max(ARCHS[base][1][_WIDTH_OPTION[base]]):g} units; "
            f"pass --width between 0 and {MAX_WIDTH:g}"
        )
    key = _WIDTH_OPTION[base]
    return factory, {**options, key: [max(1, round(scale * w)) for w in options[key]]}


class Cell(NamedTuple):
    """One run of the study: an architecture, a variant with its options, a density, a seed."""

    arch: str
    variant: str
    density: float
    seed: int
    options: tuple[tuple[str, Any], ...] = ()  # the factors that differ from the variant's own

    @property
    def label(self) -> str:
        """``N2NSkip-RP``, ``N2NSkip-RP [placement=connectivity]``, ``N2NSkip-RP [authors' code]``."""
        if not self.options:
            return self.variant
        texts = [f"{k}={option_text(v)}" for k, v in self.options]
        authors = AUTHORS_OPTIONS.split(",")
        if all(text in texts for text in authors):
            texts = ["authors' code", *(text for text in texts if text not in authors)]
        return f"{self.variant} [{', '.join(texts)}]"


def option_text(value: Any) -> str:
    """A study option's value as labels, cell file names and tables write it.

    Args:
        value: the value (``on`` / ``off`` for a yes-no option).

    Returns:
        ``on`` / ``off``, a number in ``:g`` form (a share of 0 is ``0``), or the text.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class StudyPlan:
    """The grid and the recipe shared by every cell.

    ``variants`` may carry options (``"N2NSkip-RP:placement=connectivity"``); ``factors``
    maps a factor to several values, and every variant it applies to runs at each of them.
    """

    archs: Sequence[str] = ("mlp", "vgg1d")
    variants: Sequence[str] = DEFAULT_VARIANTS
    densities: Sequence[float] = (0.1, 0.05, 0.02)
    seeds: Sequence[int] = (0, 1, 2)
    data: str = "mnist1d"
    recipe: dict[str, Any] = field(default_factory=lambda: dict(STUDY_RECIPE))
    widths: Sequence[float] = (1,)
    factors: dict[str, Sequence[Any]] = field(default_factory=dict)
    rescale: bool = True
    name: str = "results"  # the summary's files: OUT/<name>.md, .json and figures

    def arch_names(self) -> list[str]:
        """Every architecture at every width (``vgg1d``, ``vgg1d-x2`` ...)."""
        names = [arch_name(arch, width) for arch in self.archs for width in self.widths]
        for name in names:
            arch_spec(name)
        return names

    def cells(self) -> list[Cell]:
        """Every run; dense runs once per architecture and seed.

        Raises:
            InvalidArgumentError: an unknown architecture, variant, factor or value.
        """
        specs = [parse_variant(spec) for spec in self.variants]
        for name, values in self.factors.items():
            for value in values:
                _check_factor(name, value)
        grid: dict[Cell, None] = {}
        for arch in self.arch_names():
            for seed in self.seeds:
                for variant, fixed in specs:
                    densities = [1.0] if variant == "dense" else list(self.densities)
                    for options in self._combinations(variant, fixed):
                        for density in densities:
                            grid[Cell(arch, variant, density, seed, options)] = None
        return list(grid)

    def _combinations(self, variant: str, fixed: dict[str, Any]) -> list[tuple]:
        """The option tuples of one variant: the product of the factors that apply to it."""
        combos: list[dict[str, Any]] = [dict(fixed)]
        for name, values in self.factors.items():
            if name in fixed or not _applies(name, variant):
                continue
            combos = [{**combo, name: value} for combo in combos for value in values]
        return [
            tuple(
                (k, v)
                for k, v in sorted(combo.items(), key=lambda kv: list(FACTORS).index(kv[0]))
                if v != _own_default(k, variant)
            )
            for combo in combos
        ]

    def settings(self, arch: str) -> dict[str, Any]:
        """What, besides the cell's variant, options, density and seed, decides its numbers."""
        factory, options = arch_spec(arch)
        return {
            "recipe": dict(self.recipe),
            "data": self.data,
            "rescale": self.rescale,
            "arch": [factory, options],
        }

    def job(self, cell: Cell) -> JobConfig:
        """The main job's configuration of one cell."""
        from n2nonnx.pipeline import JobConfig

        method, allocation, share = VARIANTS[cell.variant]
        config = JobConfig(
            method=method,
            density=cell.density,
            skip_share=share,
            allocation=allocation,
            recipe=dict(self.recipe),
            seed=cell.seed,
            rescale=self.rescale,
        )
        for name, value in cell.options:
            job_field = FACTORS[name].job_field
            if job_field is None:
                config.skip_options[name] = value
            else:
                setattr(config, job_field, value)
        return config


def cell_path(out: Path, cell: Cell) -> Path:
    """Where a cell's numbers are kept (its options in the name)."""
    options = "".join(f"-{k}={option_text(v)}" for k, v in cell.options)
    return (
        out / "cells" / cell.arch / f"{cell.variant}-d{cell.density:g}-s{cell.seed}{options}.json"
    )
