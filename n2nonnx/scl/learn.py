"""``learn_masks``: SCL from a model and data to an ordinary masked, trained model.

Search (the first ``search_fraction`` of the epochs): theta and the mask variables train
together (:mod:`n2nonnx.scl.search`), lambda fixed (free mode) or steered to the target
density (:mod:`n2nonnx.scl.controller`). Freeze: the masks become binary (free mode:
``m > 0``; target mode: the ``k`` largest ``m`` over all candidates, so the count is exact)
and are written into the graph with :func:`n2nonnx.masks.apply_masks`, with a ``prune``
record (method ``scl``). Fine-tuning (the remaining epochs): an ordinary
:func:`n2nonnx.training.train` run of the masked model, which keeps the masks.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from n2nonnx import io, metadata
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.masks import apply_masks
from n2nonnx.model import Model
from n2nonnx.scl.options import MASK_INIT, MASK_LR, NORMALISATIONS, REACH, WARMUP, SclOptions
from n2nonnx.scl.result import LearnedLayer, SclResult

__all__ = [
    "MASK_INIT",
    "MASK_LR",
    "NORMALISATIONS",
    "REACH",
    "TOLERANCE",
    "WARMUP",
    "learn_masks",
    "learn_masks_with",
]

log = logging.getLogger(__name__)

#: relative tolerance of the target density
TOLERANCE = 0.02


def learn_masks(
    model: Any,
    data: Any,
    *,
    density: float | None = None,
    scl_lambda: float | None = None,
    epochs: int | None = None,
    search_fraction: float = 0.5,
    recipe: Any = None,
    seed: int | None = None,
    progress: bool = False,
    mask_init: float = MASK_INIT,
    mask_lr: float = MASK_LR,
    max_lambda: float | None = None,
    normalisation: str = "rms",
    warmup: float | None = None,
    reach: float | None = None,
    exclude: Sequence[str] = (),
    device: str = "cpu",
    data_seed: int = 0,
    on_epoch: Callable[[Any], None] | None = None,
    **options: Any,
) -> SclResult:
    """Learn sparse connectivity with SCL and fine-tune; returns an ordinary masked model.

    Every weight of every prunable layer (N2NSkip weights included, unless excluded) is
    ``theta * step(m)``; every connection starts on (``m = mask_init``; masks the model
    already had are replaced, and entries a previous pruning zeroed start from zero).

    Args:
        model: a :class:`Model` or anything :func:`n2nonnx.io.load` reads.
        data: anything :func:`n2nonnx.data.resolve_data` accepts (required).
        density: target mode: the fraction of connections kept, relative to the dense
            sequential weights (N2NSkip weights count in the numerator, as in
            :func:`n2nonnx.add_n2nskip`).
        scl_lambda: free mode: the regulariser weight (>= 0), in units of the per-unit
            normalised gradient; the density is whatever is learned.
        epochs: total training epochs, search and fine-tuning (default: the recipe's).
        search_fraction: fraction of the epochs spent learning masks, in (0, 1]; the rest
            fine-tunes theta with the masks frozen.
        recipe: a :class:`n2nonnx.TrainConfig` for theta (optimizer, lr, schedule, weight
            decay, batch size); the schedule restarts for the fine-tuning.
        seed: seed of shuffling and every RNG (default: the recipe's).
        progress: show progress bars.
        mask_init: initial value of every mask variable (> 0).
        mask_lr: learning rate of the mask variables (> 0).
        max_lambda: upper bound of lambda in target mode (None: unbounded).
        normalisation: per-unit normalisation of the mask gradients: ``"rms"`` (each unit's
            vector to RMS 1) or ``"norm"`` (to L2 norm 1).
        warmup: target mode: fraction of the search with lambda = 0 (default
            :data:`n2nonnx.scl.controller.WARMUP`).
        reach: target mode: fraction of the search at which the target is reached and from
            which it is held (default :data:`n2nonnx.scl.controller.REACH`).
        exclude: layer or weight names / patterns left dense and out of the count.
        device: torch device.
        data_seed: seed of hold-out splits when ``data`` has no test split.
        on_epoch: called with each epoch's :class:`n2nonnx.training.EpochRecord`.
        options: further :class:`n2nonnx.TrainConfig` fields (``lr=...``, ``batch_size=...``).

    Returns:
        An :class:`SclResult`.

    Raises:
        DataError: no data, or data that does not fit the model.
        InvalidArgumentError: a bad option, both or neither of ``density`` and
            ``scl_lambda``, or a target above what the candidates hold.

    Warns:
        UserWarning: the search ended more than 2% (relative) away from the target density;
            the message gives the density reached. The top-k freeze still meets the target.
    """
    settings = SclOptions(
        density=density,
        scl_lambda=scl_lambda,
        search_fraction=search_fraction,
        mask_init=mask_init,
        mask_lr=mask_lr,
        max_lambda=max_lambda,
        normalisation=normalisation,
        warmup=WARMUP if warmup is None else warmup,
        reach=REACH if reach is None else reach,
        exclude=tuple(exclude),
        device=device,
    )
    return learn_masks_with(
        model,
        data,
        settings,
        epochs=epochs,
        recipe=recipe,
        seed=seed,
        progress=progress,
        data_seed=data_seed,
        on_epoch=on_epoch,
        **options,
    )


def learn_masks_with(
    model: Any,
    data: Any,
    settings: SclOptions,
    *,
    epochs: int | None = None,
    recipe: Any = None,
    seed: int | None = None,
    progress: bool = False,
    data_seed: int = 0,
    on_epoch: Callable[[Any], None] | None = None,
    **options: Any,
) -> SclResult:
    """:func:`learn_masks` with its mask-learning options already made (and validated).

    Args:
        model: a :class:`Model` or anything :func:`n2nonnx.io.load` reads.
        data: anything :func:`n2nonnx.data.resolve_data` accepts (required).
        settings: the mask-learning options.
        epochs: total training epochs (default: the recipe's).
        recipe: a :class:`n2nonnx.TrainConfig` for theta.
        seed: seed of shuffling and every RNG (default: the recipe's).
        progress: show progress bars.
        data_seed: seed of hold-out splits when ``data`` has no test split.
        on_epoch: called with each epoch's record.
        options: further :class:`n2nonnx.TrainConfig` fields.

    Returns:
        An :class:`SclResult` (see :func:`learn_masks`).
    """
    from n2nonnx.training import TrainConfig

    density, scl_lambda = settings.density, settings.scl_lambda
    search_fraction, mask_init, mask_lr = (
        settings.search_fraction,
        settings.mask_init,
        settings.mask_lr,
    )
    max_lambda, normalisation = settings.max_lambda, settings.normalisation
    warmup, reach = settings.warmup, settings.reach
    exclude, device = settings.exclude, settings.device
    if data is None:
        raise DataError(
            "SCL learns masks during training and needs data: pass data= (--data mnist1d, "
            "digits, synthetic or an .npz file)"
        )
    config = TrainConfig.from_options(recipe, epochs=epochs, seed=seed, **options)
    search_epochs = min(config.epochs, max(1, int(round(search_fraction * config.epochs))))
    if not isinstance(model, Model):
        model = io.load(model, analyze=False)
    candidates = _candidates(model, exclude)
    reference = sum(layer.parameters for layer in model.layers if not layer.is_skip)
    available = sum(int(np.prod(model.initializer(c.weight).shape)) for c in candidates)
    target = None
    if density is not None:
        target = int(round(density * reference))
        if target < 1:
            raise InvalidArgumentError(
                f"density={density:g} keeps no connection of {reference}; raise it"
            )
        if target > available:
            raise InvalidArgumentError(
                f"density={density:g} asks for {target} connections but the learned weights hold only "
                f"{available} ({available / reference:.4g} of the dense sequential weights); lower it or "
                "exclude fewer layers"
            )
    dataset = _resolve(model, data, data_seed)
    gated_model = apply_masks(
        model,
        {c.weight: np.ones(model.initializer(c.weight).shape, np.float32) for c in candidates},
    )
    masks, gated, trace, device_used = _run_search(
        gated_model,
        dataset,
        _phase(config, search_epochs),
        candidates,
        target=target,
        available=available,
        scl_lambda=scl_lambda,
        mask_init=mask_init,
        mask_lr=mask_lr,
        max_lambda=max_lambda,
        normalisation=normalisation,
        schedule=(warmup, reach),
        device=device,
        progress=progress,
        on_epoch=on_epoch,
    )
    learned = trace.kept[-1] / reference
    reached = True
    if density is not None:
        reached = abs(learned - density) <= TOLERANCE * density
        if not reached:
            warnings.warn(
                f"SCL did not reach the target density {density:g} within {TOLERANCE:.0%} in "
                f"{search_epochs} search epoch(s): it reached {learned:.4g}; the {target} largest mask "
                "variables were kept to meet the target (give more epochs, a larger search_fraction, "
                "or a larger max_lambda)",
                stacklevel=2,
            )
    trained = gated.module.write_back(gated_model.proto)
    masked = apply_masks(gated_model.with_proto(trained), masks)
    layers = [
        LearnedLayer(
            c.layer,
            c.weight,
            int(np.count_nonzero(masks[c.weight])),
            int(masks[c.weight].size),
            c.is_skip,
        )
        for c in candidates
    ]
    split = {
        "sequential_nonzeros": sum(r.kept for r in layers if not r.is_skip),
        "skip_nonzeros": sum(r.kept for r in layers if r.is_skip),
    }
    final_density = (split["sequential_nonzeros"] + split["skip_nonzeros"]) / reference
    recorded = {
        "mode": settings.mode,
        "scl_lambda": scl_lambda,
        "epochs": config.epochs,
        "search_epochs": search_epochs,
        "mask_init": mask_init,
        "mask_lr": mask_lr,
        "max_lambda": max_lambda,
        "ste": "identity",
        "normalisation": f"per-unit {normalisation}",
        "data": dataset.name,
        "warmup": warmup,
        "reach": reach,
    }
    record = _provenance(
        density,
        final_density,
        config.seed,
        exclude,
        recorded,
        layers,
        trace,
        reference,
        {"learned_density": learned, "reached": reached, **split},
    )
    metadata.append_stage(masked.proto, "prune", **record)  # apply_masks made a fresh proto
    log.info(
        "scl: density %.4g (search reached %.4g), %d sequential + %d skip non-zeros",
        final_density,
        learned,
        split["sequential_nonzeros"],
        split["skip_nonzeros"],
    )
    final, history = _finetune(
        masked, dataset, config, search_epochs, trace.records, device_used, progress, on_epoch
    )
    return SclResult(
        model=final,
        layers=layers,
        density=final_density,
        learned_density=learned,
        reached=reached,
        skip_split=split,
        lambdas=trace.lambdas,
        kept_trace=trace.kept,
        history=history,
        record=record,
    )


def _provenance(
    density: float | None,
    final_density: float,
    seed: int,
    exclude: Sequence[str],
    settings: dict[str, Any],
    layers: list[LearnedLayer],
    trace: Any,
    reference: int,
    outcome: dict[str, Any],
) -> dict[str, Any]:
    """The ``prune`` record: the fields :func:`n2nonnx.prune` writes, plus the search's outcome."""
    per_epoch = max(1, len(trace.kept) // max(1, len(trace.records)))
    return {
        "method": "scl",
        "density": float(density) if density is not None else final_density,
        "achieved_density": final_density,
        "allocation": "learned",
        "seed": seed,
        "batch_size": None,
        "exclude": list(exclude),
        "first_last_density": None,
        "rescale": False,
        "options": settings,
        "layers": [
            {
                "layer": r.layer,
                "weight": r.weight,
                "kept": r.kept,
                "total": r.total,
                "skip": r.is_skip,
            }
            for r in layers
        ],
        "scl": {
            **outcome,
            "lambda_per_epoch": trace.lambdas[per_epoch - 1 :: per_epoch],
            "density_per_epoch": [k / reference for k in trace.kept[per_epoch - 1 :: per_epoch]],
        },
    }


def _run_search(
    gated_model: Model,
    dataset: Any,
    config: Any,
    candidates: list,
    *,
    target: int | None,
    available: int,
    scl_lambda: float | None,
    mask_init: float,
    mask_lr: float,
    max_lambda: float | None,
    normalisation: str,
    schedule: tuple[float, float],
    device: str,
    progress: bool,
    on_epoch: Any,
) -> tuple:
    """Build the gated module, run the search, freeze the masks (numpy 0/1 per weight)."""
    import torch

    from n2nonnx.scl.controller import FixedLambda, TargetDensity
    from n2nonnx.scl.search import search, search_steps_per_epoch
    from n2nonnx.training.devices import resolve_device

    target_device = resolve_device(device)
    steps = search_steps_per_epoch(len(dataset.x_train), config.batch_size) * config.epochs
    if steps == 0:
        raise DataError(f"the training split has {len(dataset.x_train)} sample(s); need at least 2")
    controller = (
        FixedLambda(float(scl_lambda or 0.0))
        if target is None
        else TargetDensity(
            start=available,
            target=target,
            steps=steps,
            warmup=schedule[0],
            reach=schedule[1],
            max_lambda=max_lambda,
        )
    )
    gated, trace = search(
        gated_model,
        dataset,
        config,
        controller,
        candidates,
        mask_init=mask_init,
        mask_lr=mask_lr,
        normalisation=normalisation,
        device=target_device,
        progress=progress,
        on_epoch=on_epoch,
    )
    gated.eval()
    with torch.no_grad():
        values = [v.detach().cpu() for v in gated.mask_values]
        if target is None:
            keep = [v > 0 for v in values]
        else:
            flat = torch.cat([v.reshape(-1) for v in values])
            order = torch.sort(flat, descending=True, stable=True).indices[:target]
            chosen = torch.zeros(flat.numel(), dtype=torch.bool)
            chosen[order] = True
            keep, offset = [], 0
            for v in values:
                keep.append(chosen[offset : offset + v.numel()].reshape(v.shape))
                offset += v.numel()
    masks = {c.weight: k.numpy().astype(np.float32) for c, k in zip(candidates, keep, strict=True)}
    return masks, gated, trace, target_device


def _finetune(
    masked: Model,
    dataset: Any,
    config: Any,
    search_epochs: int,
    search_records: list,
    device: Any,
    progress: bool,
    on_epoch: Any,
) -> tuple[Model, Any]:
    """Train theta with the masks frozen for the remaining epochs; the combined history."""
    from n2nonnx.training import History, train

    history = History(list(search_records))
    remaining = config.epochs - search_epochs
    if remaining <= 0:
        return masked, history

    def renumbered(record: Any) -> None:
        shifted = replace(record, epoch=record.epoch + search_epochs)
        history.append(shifted)
        if on_epoch is not None:
            on_epoch(shifted)

    result = train(
        masked,
        dataset,
        _phase(config, remaining),
        device=device,
        progress=progress,
        on_epoch=renumbered,
    )
    return result.model, history


def _phase(config: Any, epochs: int) -> Any:
    """The recipe of one phase: ``epochs`` epochs; a derived 'step' interval is derived anew."""
    derived = config.step_size == max(1, config.epochs // 3)
    return replace(config, epochs=epochs, step_size=0 if derived else config.step_size)


def _candidates(model: Model, exclude: Sequence[str]) -> list:
    from n2nonnx.pruning import select_layers
    from n2nonnx.scl.search import Candidate

    layers = list(select_layers(model, exclude)) + [
        layer for layer in model.layers if layer.is_skip
    ]
    chosen = {layer.name for layer in layers}
    return [
        Candidate(layer.weight, layer.name, layer.unit_axis, layer.is_skip)
        for layer in model.layers
        if layer.name in chosen
    ]


def _resolve(model: Model, data: Any, seed: int) -> Any:
    from n2nonnx.data import resolve_data

    info = model.graph_inputs[0]
    return resolve_data(data, input_shape=info.shape, seed=seed, input_name=info.name)
