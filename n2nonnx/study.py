"""The paper's comparison at CPU scale: dense, RP, N2NSkip-RP, CSP, N2NSkip-CSP over densities and seeds.

Every cell (architecture x variant x density x seed) is one :func:`n2nonnx.pipeline.sparsify`
run with the same recipe; its numbers go to ``cells/<arch>/<cell>.json`` as soon as it
finishes, so an interrupted study resumes where it stopped. :func:`summarize` turns the
cells into ``results.md`` (mean +- std), ``results.json`` and figures (accuracy vs density,
delta vs density, adjacency matrices at initialization).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.paths import check_output_dir, write_text_atomic
from n2nonnx.pipeline import RECIPE_DEFAULTS, JobConfig, json_default, sparsify
from n2nonnx.zoo import export_builtin

log = logging.getLogger(__name__)

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


# The study's architectures (zoo factory, options): a deep MLP and a VGG-style 1-D CNN,
# deep enough that sparse sequential chains can break (the regime N2NSkip targets).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {"hidden": [256] * 8}),
    "vgg1d": ("vgg1d", {"widths": [32, 32, 64, 64, 128, 128], "pool_after": [1, 3]}),
}
# One recipe for every cell: Adam trains the deep plain MLP, where SGD at lr 0.05 does not.
STUDY_RECIPE: dict[str, Any] = {**RECIPE_DEFAULTS, "epochs": 15}


@dataclass
class StudyPlan:
    """The grid and the recipe shared by every cell."""

    archs: Sequence[str] = ("mlp", "vgg1d")
    variants: Sequence[str] = DEFAULT_VARIANTS
    densities: Sequence[float] = (0.1, 0.05, 0.02)
    seeds: Sequence[int] = (0, 1, 2)
    data: str = "mnist1d"
    recipe: dict[str, Any] = field(default_factory=lambda: dict(STUDY_RECIPE))
    sampling: str = "block"
    rescale: bool = True

    def cells(self) -> list[tuple[str, str, float, int]]:
        """(arch, variant, density, seed) of every run; dense runs once per seed."""
        for arch in self.archs:
            if arch not in ARCHS:
                raise InvalidArgumentError(
                    f"unknown study architecture {arch!r}; choose from {', '.join(ARCHS)}"
                )
        for variant in self.variants:
            if variant not in VARIANTS:
                raise InvalidArgumentError(
                    f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}"
                )
        grid = []
        for arch in self.archs:
            for seed in self.seeds:
                for variant in self.variants:
                    densities = [1.0] if variant == "dense" else list(self.densities)
                    grid += [(arch, variant, density, seed) for density in densities]
        return grid

    def settings(self, arch: str) -> dict[str, Any]:
        """What, besides variant, density and seed, decides a cell's numbers."""
        factory, options = ARCHS[arch]
        return {
            "recipe": dict(self.recipe),
            "data": self.data,
            "sampling": self.sampling,
            "rescale": self.rescale,
            "arch": [factory, options],
        }


def cell_path(out: Path, arch: str, variant: str, density: float, seed: int) -> Path:
    """Where a cell's numbers are kept."""
    return out / "cells" / arch / f"{variant}-d{density:g}-s{seed}.json"


def _done(path: Path, settings: dict[str, Any]) -> bool:
    """A finished cell run with the same settings (a cell from other settings is redone)."""
    if not path.exists():
        return False
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return _well_formed(cell) and cell.get("settings") == json.loads(json.dumps(settings))


def run_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    progress: bool = False,
    main_process: bool = True,
    agree: Any = None,
) -> dict[str, Any] | None:
    """Run every missing cell of ``plan`` into ``out``, then summarise.

    Args:
        plan: the grid and recipe.
        out: the study folder; cells already there are kept (resume).
        progress: show a progress bar over the cells.
        main_process: False on the other processes under ``torchrun``: they train every
            cell with the first process (training is collective) but write nothing.
        agree: under ``torchrun``, a function giving every process the first one's value
            (so all agree on which cells are left); None for a single process.

    Returns:
        The summary (also written to ``out/results.json``); None on the other processes.
    """
    from tqdm import tqdm

    import n2nonnx

    out = check_output_dir(out)
    cells = plan.cells()
    todo = [c for c in cells if not _done(cell_path(out, *c), plan.settings(c[0]))]
    if agree is not None:
        todo = agree(todo)
    if len(todo) < len(cells):
        log.info("resuming: %d of %d cells already done", len(cells) - len(todo), len(cells))
    models, unsaved = _models(plan, out, sorted({cell[0] for cell in todo}))
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc="study",
        unit="cell",
        disable=None if progress and main_process else True,
    )
    try:
        for arch, variant, density, seed in todo:
            if (
                arch in unsaved and main_process
            ):  # written with its first cell: a failing study leaves nothing
                path = out / "models" / f"{arch}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                n2nonnx.save(unsaved.pop(arch), path)
            method, allocation, share = VARIANTS[variant]
            config = JobConfig(
                method=method,
                density=density,
                skip_share=share,
                allocation=allocation,
                sampling=plan.sampling,
                recipe=dict(plan.recipe),
                seed=seed,
                rescale=plan.rescale,
            )
            numbers = sparsify(models[arch], plan.data, config).numbers
            numbers.update(arch=arch, variant=variant, seed=seed, settings=plan.settings(arch))
            if not main_process:
                continue
            target = cell_path(out, arch, variant, density, seed)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                target, json.dumps(numbers, default=json_default)
            )  # complete or absent
            bar.update()
            bar.write(
                f"{arch:6s} {variant:12s} density {density:<5g} seed {seed}: "
                f"{numbers['onnxruntime_test_accuracy']:.2%}"
                + (
                    f", delta {numbers['connectivity']['saturation_delta']:.3g}"
                    if "connectivity" in numbers
                    else ""
                )
            )
    finally:
        bar.close()
    return summarize(plan, out) if main_process else None


def _models(plan: StudyPlan, out: Path, archs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study's models, with the data checked against each before any cell runs.

    Returns:
        (arch -> model, arch -> models exported now and not yet saved under ``out/models``).
    """
    import tempfile

    import n2nonnx
    from n2nonnx.data import check_classes, check_float32_input, resolve_data
    from n2nonnx.errors import N2NError

    models, unsaved = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for arch in archs:
            path = out / "models" / f"{arch}.onnx"
            model = None
            if path.exists():
                try:
                    model = n2nonnx.load(path)
                except N2NError as error:
                    log.warning("re-exporting the study model %s: %s", path, error)
            if model is None:
                factory, options = ARCHS[arch]
                model = unsaved[arch] = n2nonnx.load(
                    export_builtin(factory, Path(scratch) / f"{arch}.onnx", 0, options)
                )
            check_float32_input(model)
            info = model.graph_inputs[0]
            check_classes(
                model, resolve_data(plan.data, input_shape=info.shape, input_name=info.name)
            )
            models[arch] = model
    return models, unsaved


def load_cells(out: Path) -> list[dict[str, Any]]:
    """Every readable cell of a study folder; a damaged cell file is skipped with a warning."""
    cells = []
    for path in sorted((out / "cells").glob("*/*.json")):
        try:
            cell = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            cell = None
        if _well_formed(cell):
            cells.append(cell)
        else:
            log.warning("skipping damaged study cell %s (it is redone on the next run)", path)
    return cells


def _well_formed(cell: Any) -> bool:
    """A cell record with the fields :func:`summarize` reads, of the right kinds."""
    number = (int, float)
    try:
        return (
            isinstance(cell, dict)
            and "settings" in cell
            and isinstance(cell["arch"], str)
            and isinstance(cell["variant"], str)
            and isinstance(cell["seed"], int)
            and isinstance(cell["config"]["density"], number)
            and isinstance(cell["density"], number)
            and isinstance(cell["onnxruntime_test_accuracy"], number)
            and (
                "connectivity" not in cell
                or all(
                    isinstance(cell["connectivity"][key], number)
                    for key in ("saturation_delta", "dead_units")
                )
            )
        )
    except (KeyError, TypeError):
        return False


def summarize(plan: StudyPlan, out: str | Path) -> dict[str, Any]:
    """Aggregate the cells of ``out`` into tables and figures."""
    out = Path(out)
    settings = {arch: json.loads(json.dumps(plan.settings(arch))) for arch in plan.archs}
    cells = [
        c
        for c in load_cells(out)
        if c["arch"] in plan.archs
        and c["variant"] in plan.variants
        and c["seed"] in plan.seeds
        and (c["variant"] == "dense" or c["config"]["density"] in plan.densities)
        and c.get("settings") == settings[c["arch"]]
    ]
    groups: dict[tuple[str, str, float], list[dict]] = defaultdict(list)
    for cell in cells:
        groups[(cell["arch"], cell["variant"], cell["config"]["density"])].append(cell)
    rows = []
    for (arch, variant, density), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], -kv[0][2], list(VARIANTS).index(kv[0][1]))
    ):
        accuracy = np.array([100 * m["onnxruntime_test_accuracy"] for m in members])
        deltas = [m["connectivity"]["saturation_delta"] for m in members if "connectivity" in m]
        rows.append(
            {
                "arch": arch,
                "variant": variant,
                "density": density,
                "seeds": sorted(m["seed"] for m in members),
                "accuracy_mean": float(accuracy.mean()),
                "accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
                "achieved_density": float(np.mean([m["density"] for m in members])),
                "delta_mean": float(np.mean(deltas)) if deltas else None,
                "dead_units_mean": float(
                    np.mean(
                        [m["connectivity"]["dead_units"] for m in members if "connectivity" in m]
                    )
                )
                if deltas
                else None,
            }
        )
    summary = {"plan": _plan_dict(plan), "rows": rows}
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "results.md", format_table(rows, plan))
    if rows:
        plot_accuracy(rows, out / "accuracy_vs_density.png")
        plot_delta(rows, out / "delta_vs_density.png")
    return summary


def format_table(rows: list[dict[str, Any]], plan: StudyPlan) -> str:
    """Markdown: one table per architecture, variants as rows, densities as columns."""
    recipe = plan.recipe
    lines = [
        "# n2nonnx study",
        "",
        f"Data {plan.data}; {recipe['epochs']} epochs, {recipe['optimizer']} lr {recipe['lr']}, batch "
        f"{recipe['batch_size']}, weight decay {recipe['weight_decay']}, {recipe['schedule']} schedule; "
        f"seeds {list(plan.seeds)}; N2NSkip sampling {plan.sampling}; fan-in-corrected init of kept "
        f"weights: {plan.rescale}. Test accuracy (%) in onnxruntime, "
        "mean +- std over seeds; delta = heat-diffusion delta at saturation against the dense graph.",
    ]
    for arch in plan.archs:
        mine = [r for r in rows if r["arch"] == arch]
        if not mine:
            continue
        densities = sorted({r["density"] for r in mine if r["variant"] != "dense"}, reverse=True)
        lines += [
            "",
            f"## {arch}",
            "",
            "| variant | " + " | ".join(f"{d:.0%}" for d in densities) + " |",
            "|---|" + "---|" * len(densities),
        ]
        for variant in plan.variants:
            cells = {r["density"]: r for r in mine if r["variant"] == variant}
            if variant == "dense" and 1.0 in cells:
                r = cells[1.0]
                lines.append(
                    f"| dense | {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} |"
                    + " |" * (len(densities) - 1)
                )
                continue
            entries = [
                f"{cells[d]['accuracy_mean']:.2f} +- {cells[d]['accuracy_std']:.2f}"
                if d in cells
                else ""
                for d in densities
            ]
            lines.append(f"| {variant} | " + " | ".join(entries) + " |")
        lines += [
            "",
            "| delta (dead units) | " + " | ".join(f"{d:.0%}" for d in densities) + " |",
            "|---|" + "---|" * len(densities),
        ]
        for variant in plan.variants:
            if variant == "dense":
                continue
            cells = {r["density"]: r for r in mine if r["variant"] == variant}
            entries = [
                f"{cells[d]['delta_mean']:.3g} ({cells[d]['dead_units_mean']:.0f})"
                if d in cells and cells[d]["delta_mean"] is not None
                else ""
                for d in densities
            ]
            lines.append(f"| {variant} | " + " | ".join(entries) + " |")
    lines += [
        "",
        "![accuracy vs density](accuracy_vs_density.png)",
        "",
        "![delta vs density](delta_vs_density.png)",
        "",
    ]
    return "\n".join(lines)


def _figure(rows, key, path: Path, ylabel: str, log_y: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({r["arch"] for r in rows})
    if not archs:  # e.g. only the dense variant: no delta to draw
        return
    figure, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 4), squeeze=False)
    for axis, arch in zip(axes[0], archs, strict=True):
        for variant in VARIANTS:
            points = sorted(
                (r["density"], r[key], r.get("accuracy_std", 0))
                for r in rows
                if r["arch"] == arch and r["variant"] == variant and r[key] is not None
            )
            if not points:
                continue
            if variant == "dense":
                axis.axhline(points[0][1], color="black", linestyle=":", label="dense")
                continue
            x, y, err = zip(*points, strict=True)
            style = "-" if variant.startswith("N2NSkip") else "--"
            axis.errorbar(
                [100 * v for v in x],
                y,
                yerr=err if key == "accuracy_mean" else None,
                marker="o",
                linestyle=style,
                capsize=3,
                label=variant,
            )
        axis.set_xscale("log")
        ticks = sorted(
            {100 * r["density"] for r in rows if r["arch"] == arch and r["variant"] != "dense"}
        )
        axis.set_xticks(ticks, [f"{t:g}%" for t in ticks])
        axis.minorticks_off()
        if log_y and any(r[key] for r in rows if r["arch"] == arch):
            axis.set_yscale("symlog", linthresh=1e-6)  # delta can be exactly 0
            axis.set_ylim(bottom=0)
        axis.set(xlabel="density", ylabel=ylabel, title=arch)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy(rows, path: Path) -> None:
    """Test accuracy vs density, one panel per architecture."""
    _figure(rows, "accuracy_mean", path, "test accuracy (%)")


def plot_delta(rows, path: Path) -> None:
    """Saturation delta vs density (log scale), one panel per architecture."""
    _figure(
        [r for r in rows if r["variant"] != "dense"],
        "delta_mean",
        path,
        "heat-diffusion delta",
        log_y=True,
    )


def _plan_dict(plan: StudyPlan) -> dict[str, Any]:
    return {
        "archs": list(plan.archs),
        "variants": list(plan.variants),
        "densities": list(plan.densities),
        "seeds": list(plan.seeds),
        "data": plan.data,
        "recipe": plan.recipe,
        "sampling": plan.sampling,
        "rescale": plan.rescale,
        "architectures": {a: ARCHS[a] for a in plan.archs},
        "variant_definitions": {
            k: {"method": m, "allocation": a, "skip_share": s} for k, (m, a, s) in VARIANTS.items()
        },
    }
