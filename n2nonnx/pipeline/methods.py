"""Every pruning method behind one call: at initialization, learned (SCL) and structured.

    pruned = n2nonnx.prune(model, "snip", density=0.05, data="mnist1d")
    slim = n2nonnx.prune(trained, "snacs", density=0.7, data="mnist1d")   # 70% of parameters kept
    result = prune_model(model, "scl", density=0.05, data="mnist1d", epochs=10)
    result.model, result.record                                          # one result type

:func:`prune_model` picks the stage from the method's name (:data:`PRUNE_METHODS`, the
``n2nonnx prune --method`` choices) and builds that stage's validated options
(:class:`~n2nonnx.pruning.options.PruneOptions`, :class:`~n2nonnx.scl.options.SclOptions`,
:class:`~n2nonnx.structured.options.StructuredOptions`) from the keyword arguments; with
``skip=`` it adds N2NSkip connections within the same budget, as ``prune --n2nskip`` does.
The stages are imported when called, so this module (and the command line reading
:data:`PRUNE_METHODS`) imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.pruning.options import AT_INIT_METHODS, PruneOptions
from n2nonnx.scl.options import SclOptions
from n2nonnx.skip.options import SkipOptions
from n2nonnx.structured.options import PRUNE_NAMES, StructuredOptions

LEARNED_METHODS = ("scl",)
STRUCTURED_METHODS = tuple(PRUNE_NAMES)
#: every method :func:`prune_model` accepts by name (and registered criteria besides)
PRUNE_METHODS = AT_INIT_METHODS + LEARNED_METHODS + STRUCTURED_METHODS
#: the default density of pruning at initialization
AT_INIT_DENSITY = 0.1

__all__ = [
    "LEARNED_METHODS",
    "PRUNE_METHODS",
    "STRUCTURED_METHODS",
    "PruneResult",
    "method_kind",
    "prune",
    "prune_model",
]


@dataclass
class PruneResult:
    """What :func:`prune_model` returns, for every method.

    Attributes:
        model: the pruned model (masked, or smaller for a structured method), with the
            stage's record in its metadata.
        method: the method as asked.
        kind: ``at_init``, ``learned`` or ``structured``.
        record: the stage record written into the model (``prune``, or ``structured_prune``).
        details: the stage's own result: an :class:`~n2nonnx.scl.SclResult` (learned), a
            :class:`~n2nonnx.structured.StructuredResult` (structured), None at init.
    """

    model: Any
    method: str
    kind: str
    record: dict[str, Any]
    details: Any = None


def method_kind(method: str) -> str:
    """``learned``, ``structured`` or ``at_init`` (any other name: a registered criterion)."""
    if method in LEARNED_METHODS:
        return "learned"
    if method in STRUCTURED_METHODS:
        return "structured"
    return "at_init"


def prune(
    model: Any,
    method: str = "snip",
    density: float | None = None,
    **options: Any,
) -> Any:
    """Prune ``model`` with any method; returns the pruned model (see :func:`prune_model`).

    Args:
        model: a loaded model.
        method: a criterion at initialization (``random``, ``expander``, ``magnitude``,
            ``snip`` / ``csp``, ``grasp``, ``synflow``), ``scl`` or a structured method
            (``snacs``, ``l1-filter``, ``random-filter``).
        density: at initialization and SCL, the fraction of the weights kept (default 0.1
            at initialization); for a structured method the fraction of the parameters kept.
        options: as for :func:`prune_model`.

    Returns:
        The pruned model; its metadata holds the stage's record.
    """
    return prune_model(model, method, density, **options).model


def prune_model(
    model: Any,
    method: str = "snip",
    density: float | None = None,
    *,
    data: Any = None,
    seed: int = 0,
    masks: str | Path | Mapping[str, Any] | None = None,
    skip: SkipOptions | Mapping[str, Any] | None = None,
    recipe: Any = None,
    progress: bool = False,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` with any method the command line offers; one result type for all.

    Args:
        model: a loaded model.
        method: see :func:`prune`; ignored with ``masks``.
        density: see :func:`prune`; with ``masks`` the total density of ``skip`` (default 1).
        data: data for data-driven methods (snip, grasp, scl, snacs) and fine-tuning.
        seed: seed of every random choice.
        masks: user-supplied masks instead of a criterion (at initialization).
        skip: add N2NSkip connections within the same budget: a :class:`SkipOptions` or
            its fields (its seed defaults to ``seed``); at initialization the sequential
            layers are pruned to their part first, for SCL the skip layers are learned too
            (in free mode, ``scl_lambda``, ``density`` then sizes the skip layers).
        recipe: a :class:`~n2nonnx.training.TrainConfig`: SCL's training, or a structured
            method's fine-tuning.
        progress: show progress bars (structured methods: log each step).
        options: the fields of the method's options: :class:`PruneOptions` (``allocation``,
            ``exclude``, ``rescale``, ``repair`` ..., and ``options=`` for the criterion),
            :class:`SclOptions` (``scl_lambda``, ``search_fraction`` ...; further
            :class:`~n2nonnx.training.TrainConfig` fields such as ``epochs`` too) or
            :class:`StructuredOptions` (``prune_percent`` instead of ``density``, ``groups``
            ...).

    Returns:
        A :class:`PruneResult`.

    Raises:
        InvalidArgumentError: an option the method does not have or out of range.
        DataError: a data-driven method without data.
    """
    kind = "at_init" if masks is not None else method_kind(method)
    if options.get("repair") and kind != "at_init":
        raise InvalidArgumentError(
            f"repair moves the weights of a model pruned at initialization; method {method} "
            "does not keep a mask to repair: drop repair or use an at-initialization method "
            f"({', '.join(AT_INIT_METHODS)})"
        )
    if kind != "at_init":
        options.pop("repair", None)
    skip_options = _skip_options(skip, seed)
    if kind == "structured":
        if skip_options is not None:
            raise InvalidArgumentError(
                f"method {method} removes whole units; N2NSkip connections are added to a model "
                "pruned at initialization or learned (scl)"
            )
        return _structured(model, method, density, data, seed, recipe, progress, options)
    if kind == "learned":
        return _learned(model, density, data, seed, skip_options, recipe, progress, options)
    return _at_init(model, method, density, data, seed, masks, skip_options, progress, options)


def _skip_options(skip: SkipOptions | Mapping[str, Any] | None, seed: int) -> SkipOptions | None:
    if skip is None or isinstance(skip, SkipOptions):
        return skip
    _refuse_unknown(dict(skip), {f.name for f in fields(SkipOptions)}, "skip")
    return SkipOptions(**{"seed": seed, **dict(skip)})


def _refuse_unknown(given: Mapping[str, Any], known: set[str], method: str) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidArgumentError(
            f"unknown option(s) {unknown} for method {method}; known: {sorted(known)}"
        )


def _at_init(
    model: Any,
    method: str,
    density: float | None,
    data: Any,
    seed: int,
    masks: Any,
    skip: SkipOptions | None,
    progress: bool,
    options: dict[str, Any],
) -> PruneResult:
    from n2nonnx import metadata
    from n2nonnx.pruning.at_init import prune_with

    known = {f.name for f in fields(PruneOptions)} - {"method", "density", "seed", "extra"}
    _refuse_unknown(options, known | {"options"}, method)
    total = density if density is not None else (1.0 if masks is not None else AT_INIT_DENSITY)
    criterion = options.pop("options", None)
    settings = PruneOptions.from_call(
        criterion,
        method=method if masks is None else "masks",
        density=total,
        seed=seed,
        **options,
    )
    sequential = total
    if skip is not None:
        from n2nonnx.skip.add import sequential_density

        sequential = sequential_density(model, total, skip.skip_share, **skip.pair_options())
        if sequential != total:
            from dataclasses import replace

            settings = replace(settings, density=sequential)
    pruned = prune_with(model, settings, data=data, masks=masks, progress=progress)
    record = metadata.stages(pruned.proto, "prune")[-1]
    if skip is not None:
        from n2nonnx.skip.add import add_n2nskip_with

        pruned = add_n2nskip_with(pruned, skip, density=total)
        if settings.repair:  # again: the skips' sources and the trimmed sequential weights
            from n2nonnx.connectivity.repair import repair_dead_weights

            pruned = repair_dead_weights(pruned, seed=seed)
    return PruneResult(pruned, method if masks is None else "masks", "at_init", record)


def _learned(
    model: Any,
    density: float | None,
    data: Any,
    seed: int,
    skip: SkipOptions | None,
    recipe: Any,
    progress: bool,
    options: dict[str, Any],
) -> PruneResult:
    from n2nonnx.training.config import TrainConfig

    mine = {f.name for f in fields(SclOptions)}
    _refuse_unknown(options, mine | {f.name for f in fields(TrainConfig)}, "scl")
    free = options.get("scl_lambda") is not None
    # in free mode a density given with skip= only sizes the N2NSkip layers
    learned = None if free and skip is not None else density
    settings = SclOptions(density=learned, **{k: v for k, v in options.items() if k in mine})
    training = {k: v for k, v in options.items() if k not in mine}
    from n2nonnx.scl.learn import learn_masks_with

    if skip is not None:
        from n2nonnx.scl.variants import n2nskip_candidates

        if density is None:
            raise InvalidArgumentError(
                "N2NSkip layers are sized for a budget: give density= with skip= for scl"
            )
        model = n2nskip_candidates(model, density=density, **skip.kwargs())
    result = learn_masks_with(
        model, data, settings, recipe=recipe, seed=seed, progress=progress, **training
    )
    from n2nonnx import metadata

    record = metadata.stages(result.model.proto, "prune")[-1]
    return PruneResult(result.model, "scl", "learned", record, result)


def _structured(
    model: Any,
    method: str,
    density: float | None,
    data: Any,
    seed: int,
    recipe: Any,
    progress: bool,
    options: dict[str, Any],
) -> PruneResult:
    from n2nonnx import metadata
    from n2nonnx.structured.prune import prune_structured_with

    known = {f.name for f in fields(StructuredOptions)} - {"method", "seed"}
    _refuse_unknown(options, known, method)
    if density is not None:
        if options.get("target_params") is not None or options.get("prune_percent") is not None:
            raise InvalidArgumentError(
                f"give one prune level for {method}: density (the fraction of the parameters "
                "kept), target_params or prune_percent"
            )
        options["target_params"] = density
    settings = StructuredOptions(method=PRUNE_NAMES[method], seed=seed, **options)
    result = prune_structured_with(model, settings, data=data, progress=progress, finetune=recipe)
    record = metadata.stages(result.model.proto, "structured_prune")[-1]
    return PruneResult(result.model, method, "structured", record, result)
