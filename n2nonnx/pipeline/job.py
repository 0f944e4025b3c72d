"""One job: model -> prune -> N2NSkip -> train -> check in onnxruntime -> connectivity.

:func:`sparsify` does the work on a model and data and returns every number; the main job
(:func:`n2nonnx.pipeline.run_job`) and each cell of the study call it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from n2nonnx import metadata
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.training.config import TrainConfig

log = logging.getLogger(__name__)

# The training recipe of a job, without its seed (the job's seed is used): TrainConfig's
# defaults, with step_size 0 meaning "derived from the epochs".
RECIPE_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in asdict(TrainConfig()).items() if k != "seed"},
    "step_size": 0,
}


@dataclass
class JobConfig:
    """What to do. ``method="dense"`` trains the unpruned model (the reference run).

    Attributes:
        method: pruning criterion (``random``, ``expander``, ``snip`` ...) or ``dense``.
        density: non-zero fraction, sequential and skip weights together.
        skip_share: share of the budget spent on N2NSkip connections (0: none).
        allocation: layer-wise allocation of the sequential budget.
        sampling: N2NSkip sampling mode (``block``, ``uniform`` or ``channel``).
        recipe: training settings (see :data:`RECIPE_DEFAULTS`).
        seed: seed of pruning, skip sampling and training.
        rescale: fan-in-corrected init of the kept sequential weights (see ``prune``).
        skip_options: further options of :func:`n2nonnx.skip.add_n2nskip` (``pairs``,
            ``per_target``, ``spread``, ``init_scale`` ...; not the ones set by the fields
            above: ``density``, ``skip_share``, ``sampling``, ``seed``).
        connectivity: also compute the heat-diffusion delta against the dense graph.
        repair: move the kept weights on no input-to-output path onto live paths after
            pruning (by the criterion's scores) and again after the skips are added (at
            random), keeping the count (see :func:`n2nonnx.connectivity.repair_dead_weights`).
    """

    method: str = "snip"
    density: float = 0.05
    skip_share: float = 0.5
    allocation: str = "erk"
    sampling: str = "block"
    recipe: dict[str, Any] = field(default_factory=lambda: dict(RECIPE_DEFAULTS))
    seed: int = 0
    rescale: bool = True
    skip_options: dict[str, Any] = field(default_factory=dict)
    connectivity: bool = True
    repair: bool = False

    @property
    def label(self) -> str:
        """``dense``, ``RP``, ``N2NSkip-RP``, ``CSP``, ``N2NSkip-CSP`` style names."""
        if self.method == "dense":
            return "dense"
        short = {"random": "RP", "expander": "RP", "snip": "CSP", "scl": "SCL"}.get(
            self.method, self.method
        )
        return f"N2NSkip-{short}" if self.skip_share > 0 else short


@dataclass
class JobResult:
    """Every number of one job, and the models it produced."""

    config: JobConfig
    numbers: dict[str, Any]
    initial: Model
    trained: Model
    history: Any
    connectivity: Any = None


def sparsify(
    dense: Model,
    data: Any,
    config: JobConfig,
    *,
    progress: bool = False,
) -> JobResult:
    """Prune, add N2NSkip connections, train and measure one model.

    Args:
        dense: the dense model.
        data: anything :func:`n2nonnx.data.resolve_data` accepts.
        config: what to do.
        progress: show training progress bars.

    Returns:
        A :class:`JobResult`; ``numbers`` holds the densities, accuracies (PyTorch and
        onnxruntime), connectivity figures and timings.
    """
    from n2nonnx.data import check_classes, check_float32_input, resolve_data
    from n2nonnx.training import train

    validate(config)
    started = time.perf_counter()
    check_float32_input(dense, "pruning, training and the report")
    info = dense.graph_inputs[0]
    dataset = resolve_data(data, input_shape=info.shape, seed=config.seed, input_name=info.name)
    check_classes(dense, dataset)
    if config.method == "scl":
        return _learned(dense, dataset, config, started, progress)
    model = build_sparse(dense, dataset, config)
    recipe = TrainConfig.from_options(**{**config.recipe, "seed": config.seed})
    log.info("train: %d epochs, %s lr %g", recipe.epochs, recipe.optimizer, recipe.lr)
    result = train(model, dataset, recipe, progress=progress)
    return _measure(config, dataset, model, result.model, result.history, started)


def build_sparse(dense: Model, dataset: Any, config: JobConfig) -> Model:
    """The sparse model a job trains: pruned, with N2NSkip connections, repaired, untrained.

    Deterministic for ``config.seed``: the study's predictor analysis rebuilds its cells'
    models with it (masks do not change in training).

    Args:
        dense: the dense model.
        dataset: the resolved data set (data-driven criteria score on it).
        config: what to do (not ``scl``: those masks are learned in training).

    Returns:
        The model before training (``dense`` itself for ``method="dense"``).
    """
    from n2nonnx.pruning import prune

    if config.method == "dense":
        return dense

    from n2nonnx.skip import sequential_density

    pair_options = {
        k: v
        for k, v in config.skip_options.items()
        if k in ("pairs", "per_target", "kernel", "pool")
    }
    sequential = sequential_density(dense, config.density, config.skip_share, **pair_options)
    log.info(
        "prune: %s, %s allocation, sequential density %.4g",
        config.method,
        config.allocation,
        sequential,
    )
    model = prune(
        dense,
        config.method,
        sequential,
        allocation=config.allocation,
        data=dataset,
        seed=config.seed,
        rescale=config.rescale,
        repair=config.repair,
    )
    if config.skip_share > 0:
        from n2nonnx.skip import add_n2nskip

        log.info(
            "n2nskip: %.0f%% of the budget on skip connections (%s sampling)",
            100 * config.skip_share,
            config.sampling,
        )
        model = add_n2nskip(
            model,
            density=config.density,
            skip_share=config.skip_share,
            sampling=config.sampling,
            seed=config.seed,
            **config.skip_options,
        )
        if config.repair:
            from n2nonnx.connectivity.repair import repair_dead_weights

            log.info("repair: the weights on dead paths after N2NSkip, moved at random")
            model = repair_dead_weights(model, seed=config.seed)
    return model


def _learned(
    dense: Model, dataset: Any, config: JobConfig, started: float, progress: bool
) -> JobResult:
    """SCL (or N2NSkip-SCL): masks learned in the first part of the recipe's epochs."""
    from n2nonnx.scl.variants import scl_cell

    log.info(
        "scl: learning masks to density %.4g (%.0f%% of the budget on skips)",
        config.density,
        100 * config.skip_share,
    )
    learned = scl_cell(
        dense,
        dataset,
        density=config.density,
        skip_share=config.skip_share,
        recipe=dict(config.recipe),
        seed=config.seed,
        sampling=config.sampling,
        skip_options=config.skip_options,
        progress=progress,
    )
    job = _measure(config, dataset, dense, learned.model, learned.history, started)
    job.numbers.update(learned_density=learned.learned_density, skip_split=learned.skip_split)
    return job


def _measure(
    config: JobConfig, dataset: Any, initial: Model, trained: Model, history: Any, started: float
) -> JobResult:
    """Accuracy in onnxruntime, densities of the trained model and its connectivity."""
    from n2nonnx.runtime import accuracy

    x_test = dataset.x_test.numpy()
    y_test = dataset.y_test.numpy()
    onnx_accuracy = accuracy(trained, x_test, y_test)
    numbers: dict[str, Any] = {
        "label": config.label,
        "config": asdict(config),
        "data": dataset.describe(),
        **density_figures(trained),
        "torch_test_accuracy": history.final.test_accuracy,
        "onnxruntime_test_accuracy": onnx_accuracy,
        "best_test_accuracy": history.best("test_accuracy").test_accuracy,
        "history": history.to_dict(),
    }
    repairs = metadata.stages(initial.proto, "repair") if config.method != "dense" else []
    if repairs:
        numbers["repair"] = repairs
    report = None
    if config.connectivity and config.method != "dense":
        from n2nonnx.connectivity import analyze

        log.info("connectivity: heat diffusion against the dense graph")
        report = analyze(None, trained, names=[config.label])
        figures = report.models[0]
        numbers["connectivity"] = {
            "times": report.times.tolist(),
            "delta": figures.delta.tolist(),
            "saturation_delta": figures.saturation_delta,
            "components": figures.components,
            "dead_units": figures.total_dead,
            "spectral_gap": figures.spectral_gap,
        }
    numbers["seconds"] = time.perf_counter() - started
    return JobResult(config, numbers, initial, trained, history, report)


def validate(config: JobConfig) -> None:
    """Refuse a bad option before any work is done (not after minutes of pruning)."""
    from n2nonnx.pruning.allocation import ALLOCATIONS
    from n2nonnx.pruning.criteria import get_criterion
    from n2nonnx.skip.options import check_options

    if config.method not in ("dense", "scl"):
        get_criterion(config.method)
    if config.repair and config.method == "scl":
        raise InvalidArgumentError(
            "repair moves the weights of a model pruned at initialization; SCL learns its masks "
            "while training: drop repair or choose an at-initialization method"
        )
    if not 0 < config.density <= 1:
        raise InvalidArgumentError(f"density must be in (0, 1], got {config.density}")
    if not 0 <= config.skip_share < 1:
        raise InvalidArgumentError(f"skip share must be in [0, 1), got {config.skip_share}")
    if config.allocation not in ALLOCATIONS:
        raise InvalidArgumentError(
            f"unknown allocation {config.allocation!r}; choose from {', '.join(ALLOCATIONS)}"
        )
    clash = sorted(set(config.skip_options) & {"density", "skip_share", "sampling", "seed"})
    if clash:
        raise InvalidArgumentError(
            f"skip_options sets {', '.join(clash)}, which the job sets itself: use the "
            f"JobConfig field{'s' if len(clash) > 1 else ''} {', '.join(clash)} instead"
        )
    if config.skip_share > 0:
        check_options(**config.skip_options, sampling=config.sampling)
    TrainConfig.from_options(**{**config.recipe, "seed": config.seed})


def density_figures(model: Model) -> dict[str, Any]:
    """Achieved densities of a model: sequential, skip and total, over the dense sequential weights."""
    sequential = [layer for layer in model.layers if not layer.is_skip]
    skips = [layer for layer in model.layers if layer.is_skip]
    dense_weights = sum(layer.parameters for layer in sequential)
    kept_sequential = sum(
        int(np.count_nonzero(model.effective_weight(layer))) for layer in sequential
    )
    kept_skip = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in skips)
    return {
        "dense_weights": dense_weights,
        "sequential_nonzeros": kept_sequential,
        "skip_nonzeros": kept_skip,
        "skip_layers": len(skips),
        "density": (kept_sequential + kept_skip) / max(dense_weights, 1),
        "sequential_density": kept_sequential / max(dense_weights, 1),
    }
