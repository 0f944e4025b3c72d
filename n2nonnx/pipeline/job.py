"""The main job: model -> prune -> N2NSkip -> train -> check in onnxruntime -> connectivity -> report.

:func:`sparsify` does the work on a model and data and returns every number;
:func:`run_job` adds the files (trained model, ``results.json``, ``report.md``, figures).
The study (:mod:`n2nonnx.study`) calls :func:`sparsify` for each cell of its grid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model

# Adam trains sparse plain MLPs where SGD at the paper's lr 0.05 stays at chance (see the
# README's study); the CNNs train well with it too.
RECIPE_DEFAULTS = {
    "epochs": 20,
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
}


@dataclass
class JobConfig:
    """What to do. ``method="dense"`` trains the unpruned model (the reference run).

    Attributes:
        method: pruning criterion (``random``, ``expander``, ``snip`` ...) or ``dense``.
        density: non-zero fraction, sequential and skip weights together.
        skip_share: share of the budget spent on N2NSkip connections (0: none).
        allocation: layer-wise allocation of the sequential budget.
        sampling: N2NSkip sampling mode (``block`` or ``uniform``).
        recipe: training settings (see :data:`RECIPE_DEFAULTS`).
        seed: seed of pruning, skip sampling and training.
        rescale: fan-in-corrected init of the kept sequential weights (see ``prune``).
        skip_options: further options of :func:`n2nonnx.skip.add_n2nskip` (``pairs``,
            ``per_target``, ``spread``, ``init_scale`` ...).
        connectivity: also compute the heat-diffusion delta against the dense graph.
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

    @property
    def label(self) -> str:
        """``dense``, ``RP``, ``N2NSkip-RP``, ``CSP``, ``N2NSkip-CSP`` style names."""
        if self.method == "dense":
            return "dense"
        short = {"random": "RP", "expander": "RP", "snip": "CSP"}.get(self.method, self.method)
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
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> JobResult:
    """Prune, add N2NSkip connections, train and measure one model.

    Args:
        dense: the dense model.
        data: anything :func:`n2nonnx.data.resolve_data` accepts.
        config: what to do.
        progress: show training progress bars.
        log: where stage messages go.

    Returns:
        A :class:`JobResult`; ``numbers`` holds the densities, accuracies (PyTorch and
        onnxruntime), connectivity figures and timings.
    """
    from n2nonnx.backend.trainer import train
    from n2nonnx.data import resolve_data
    from n2nonnx.pruning import prune
    from n2nonnx.runtime import accuracy

    validate(config)
    started = time.perf_counter()
    info = dense.graph_inputs[0]
    dataset = resolve_data(data, input_shape=info.shape, seed=config.seed, input_name=info.name)
    model = dense
    if config.method != "dense":
        sequential = config.density * (1 - config.skip_share)
        log(f"prune: {config.method}, {config.allocation} allocation, sequential density {sequential:.4g}")
        model = prune(dense, config.method, sequential, allocation=config.allocation,
                      data=dataset, seed=config.seed, rescale=config.rescale)
        if config.skip_share > 0:
            from n2nonnx.skip import add_n2nskip

            log(f"n2nskip: {config.skip_share:.0%} of the budget on skip connections ({config.sampling} sampling)")
            model = add_n2nskip(model, density=config.density, skip_share=config.skip_share,
                                sampling=config.sampling, seed=config.seed, **config.skip_options)
    log(f"train: {config.recipe['epochs']} epochs, {config.recipe['optimizer']} lr {config.recipe['lr']}")
    result = train(model, dataset, seed=config.seed, progress=progress, **config.recipe)
    trained = result.model
    x_test = dataset.x_test.numpy()
    y_test = dataset.y_test.numpy()
    onnx_accuracy = accuracy(trained, x_test, y_test)
    numbers: dict[str, Any] = {
        "label": config.label,
        "config": asdict(config),
        "data": dataset.describe(),
        **density_figures(trained),
        "torch_test_accuracy": result.history.final.test_accuracy,
        "onnxruntime_test_accuracy": onnx_accuracy,
        "best_test_accuracy": result.history.best("test_accuracy").test_accuracy,
        "history": result.history.to_dict(),
    }
    report = None
    if config.connectivity and config.method != "dense":
        from n2nonnx.connectivity import analyze

        log("connectivity: heat diffusion against the dense graph")
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
    return JobResult(config, numbers, model, trained, result.history, report)


def validate(config: JobConfig) -> None:
    """Refuse a bad option before any work is done (not after minutes of pruning)."""
    from n2nonnx.backend.trainer import OPTIMIZERS, SCHEDULES
    from n2nonnx.pruning.allocation import ALLOCATIONS
    from n2nonnx.pruning.registry import get_criterion
    from n2nonnx.skip import SAMPLING_MODES

    if config.method != "dense":
        get_criterion(config.method)
    if not 0 < config.density <= 1:
        raise InvalidArgumentError(f"density must be in (0, 1], got {config.density}")
    if not 0 <= config.skip_share < 1:
        raise InvalidArgumentError(f"skip share must be in [0, 1), got {config.skip_share}")
    choices = [
        ("allocation", config.allocation, ALLOCATIONS),
        ("sampling", config.sampling, SAMPLING_MODES),
        ("optimizer", config.recipe.get("optimizer"), tuple(OPTIMIZERS)),
        ("schedule", config.recipe.get("schedule"), (None, *SCHEDULES)),
    ]
    for what, value, allowed in choices:
        if value not in allowed:
            names = ", ".join(str(a) for a in allowed if a is not None)
            raise InvalidArgumentError(f"unknown {what} {value!r}; choose from {names}")


def density_figures(model: Model) -> dict[str, Any]:
    """Achieved densities of a model: sequential, skip and total, over the dense sequential weights."""
    sequential = [layer for layer in model.layers if not layer.is_skip]
    skips = [layer for layer in model.layers if layer.is_skip]
    dense_weights = sum(layer.parameters for layer in sequential)
    kept_sequential = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in sequential)
    kept_skip = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in skips)
    return {
        "dense_weights": dense_weights,
        "sequential_nonzeros": kept_sequential,
        "skip_nonzeros": kept_skip,
        "skip_layers": len(skips),
        "density": (kept_sequential + kept_skip) / max(dense_weights, 1),
        "sequential_density": kept_sequential / max(dense_weights, 1),
    }


def run_job(
    model: str | Path | None,
    data: Any,
    config: JobConfig,
    out: str | Path,
    *,
    arch: str = "mlp",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> JobResult:
    """The main job with its files: ``model.onnx``, ``results.json``, ``report.md``, figures.

    Args:
        model: an ``.onnx`` path, or None for the built-in default (``arch`` from the zoo,
            exported through ``converters/``; written as ``dense.onnx``).
        data: anything :func:`n2nonnx.data.resolve_data` accepts.
        config: what to do.
        out: the report folder (created).
        arch: the built-in architecture when ``model`` is None (``mlp`` or ``vgg1d``).
        progress: show training progress bars.
        log: where stage messages go.

    Returns:
        The :class:`JobResult`.
    """
    from n2nonnx.errors import SaveError
    from n2nonnx.io import load, save

    validate(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file; give a folder for the report")
    if model is not None and Path(model).resolve() == (out / "model.onnx").resolve():
        raise InvalidArgumentError(
            f"the input {model} would be overwritten by the trained model; choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SaveError(f"cannot create the report folder {out}: {error.strerror or error}") from None
    dense = load(model) if model is not None else load(default_model(arch, out / "dense.onnx", config.seed))
    result = sparsify(dense, data, config, progress=progress, log=log)
    path = save(result.trained, out / "model.onnx")
    result.numbers["files"] = {"model": path.name, **write_figures(result, out)}
    (out / "results.json").write_text(json.dumps(result.numbers, indent=2, default=json_default))
    (out / "report.md").write_text(format_report(result.numbers))
    log(f"\nwrote {out / 'report.md'}, {out / 'results.json'} and {path}")
    return result


def default_model(arch: str, path: Path, seed: int = 0, options: dict[str, Any] | None = None) -> Path:
    """Export the built-in ``arch`` (zoo, with ``options``) for MNIST-1D to ``path``."""
    import torch

    from converters.pytorch import export
    from n2nonnx.zoo import build

    shapes = {"mlp": (1, 40), "vgg1d": (1, 1, 40)}
    if arch not in shapes:
        raise InvalidArgumentError(f"unknown built-in architecture {arch!r}; choose from {sorted(shapes)}")
    torch.manual_seed(seed)
    return export(build(arch, **(options or {})), torch.randn(*shapes[arch]), path).path


def write_figures(result: JobResult, out: Path) -> dict[str, str]:
    """Training curves and the connectivity figure; returns name -> file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    history = result.numbers["history"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [row["epoch"] for row in history["epochs"]]
    left.plot(epochs, [row["train_loss"] for row in history["epochs"]], label="train")
    left.plot(epochs, [row["test_loss"] for row in history["epochs"]], label="test")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    right.plot(epochs, [100 * row["train_accuracy"] for row in history["epochs"]], label="train")
    right.plot(epochs, [100 * row["test_accuracy"] for row in history["epochs"]], label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{result.config.label} accuracy")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "training.png", dpi=110)
    plt.close(figure)
    files["training"] = "training.png"
    if result.connectivity is not None:
        from n2nonnx.connectivity.plots import plot_report

        plot_report(result.connectivity, out / "connectivity.png")
        files["connectivity"] = "connectivity.png"
    return files


def format_report(numbers: dict[str, Any]) -> str:
    """The Markdown report of one job."""
    config = numbers["config"]
    lines = [
        f"# n2nonnx: {numbers['label']} at {numbers['density']:.1%} density",
        "",
        f"Data: {numbers['data']}. Seed {config['seed']}.",
        "",
        "| | |",
        "|---|---|",
        f"| method | {config['method']}"
        + (f" ({config['allocation']} allocation) |" if config["method"] != "dense" else " |"),
    ]
    if config["method"] != "dense":
        lines.append(
            f"| N2NSkip share of the budget | {config['skip_share']:.0%} ({config['sampling']} sampling"
            + "".join(f", {key} {value}" for key, value in config["skip_options"].items()) + ") |"
        )
    lines += [
        f"| achieved density | {numbers['density']:.4%} ({numbers['sequential_nonzeros']:,} sequential + "
        f"{numbers['skip_nonzeros']:,} skip non-zeros of {numbers['dense_weights']:,} dense weights) |",
        f"| test accuracy, onnxruntime | {numbers['onnxruntime_test_accuracy']:.2%} |",
        f"| test accuracy, PyTorch backend | {numbers['torch_test_accuracy']:.2%} |",
        f"| best test accuracy during training | {numbers['best_test_accuracy']:.2%} |",
    ]
    if "connectivity" in numbers:
        c = numbers["connectivity"]
        lines += [
            f"| heat-diffusion delta at saturation | {c['saturation_delta']:.4g} |",
            f"| connected components / dead units | {c['components']} / {c['dead_units']} |",
        ]
    recipe = config["recipe"]
    lines += [
        f"| training | {recipe['epochs']} epochs, {recipe['optimizer']} lr {recipe['lr']}, "
        f"batch {recipe['batch_size']}, weight decay {recipe['weight_decay']}, {recipe['schedule']} schedule |",
        f"| wall time | {numbers['seconds']:.0f} s |",
        "",
        "![training curves](training.png)",
    ]
    if "connectivity" in numbers:
        lines += ["", "Connectivity (adjacency of the dense reference and this model, delta(t), scree):",
                  "", "![connectivity](connectivity.png)"]
    lines += ["", "Every number is in `results.json`; the trained model is `model.onnx`.", ""]
    return "\n".join(lines)


def json_default(value):
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
