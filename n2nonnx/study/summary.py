"""A study's results: cells grouped into mean +- std tables, JSON and figures."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.paths import write_text_atomic
from n2nonnx.study.grid import FACTORS, VARIANTS, StudyPlan, arch_spec, option_text

log = logging.getLogger(__name__)


def load_cells(out: Path) -> list[dict[str, Any]]:
    """Every readable cell of a study folder; a damaged cell file is skipped with a warning."""
    cells = []
    for path in sorted((out / "cells").glob("*/*.json")):
        try:
            cell = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            cell = None
        if well_formed(cell):
            cells.append(cell)
        else:
            log.warning("skipping damaged study cell %s (it is redone on the next run)", path)
    return cells


def well_formed(cell: Any) -> bool:
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


def _labels(plan: StudyPlan) -> list[str]:
    """The plan's variant labels in their order of appearance (the tables' row order)."""
    return list(dict.fromkeys(cell.label for cell in plan.cells()))


def summarize(plan: StudyPlan, out: str | Path, *, refuse_empty: bool = False) -> dict[str, Any]:
    """Aggregate the cells of ``out`` that belong to ``plan`` into tables and figures.

    Args:
        plan: the grid whose cells are summarised.
        out: the study folder.
        refuse_empty: refuse (writing nothing) when no finished cell of ``plan`` is there.

    Raises:
        InvalidArgumentError: with ``refuse_empty``, no cell of ``plan`` in ``out``.
    """
    out = Path(out)
    wanted = {
        (c.arch, c.variant, c.density, c.seed, json.dumps(dict(c.options))): c for c in plan.cells()
    }
    settings = {arch: json.loads(json.dumps(plan.settings(arch))) for arch in plan.arch_names()}
    groups: dict[tuple[str, str, float], list[dict]] = defaultdict(list)
    for record in load_cells(out):
        key = (
            record["arch"],
            record["variant"],
            record["config"]["density"],
            record["seed"],
            json.dumps(record.get("options", {})),
        )
        cell = wanted.get(key)
        if cell is not None and record.get("settings") == settings[cell.arch]:
            groups[(cell.arch, cell.label, cell.density)].append(record)
    order = _labels(plan)
    archs = plan.arch_names()
    rows = []
    for (arch, label, density), members in sorted(
        groups.items(), key=lambda kv: (archs.index(kv[0][0]), -kv[0][2], order.index(kv[0][1]))
    ):
        accuracy = np.array([100 * m["onnxruntime_test_accuracy"] for m in members])
        linked = [m["connectivity"] for m in members if "connectivity" in m]
        rows.append(
            {
                "arch": arch,
                "variant": members[0]["variant"],
                "label": label,
                "options": members[0].get("options", {}),
                "density": density,
                "seeds": sorted(m["seed"] for m in members),
                "accuracy_mean": float(accuracy.mean()),
                "accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
                "achieved_density": float(np.mean([m["density"] for m in members])),
                "delta_mean": float(np.mean([c["saturation_delta"] for c in linked]))
                if linked
                else None,
                "dead_units_mean": float(np.mean([c["dead_units"] for c in linked]))
                if linked
                else None,
            }
        )
    if refuse_empty and not rows:
        found = sum(1 for _ in (out / "cells").rglob("*.json"))
        raise InvalidArgumentError(
            f"{out / 'cells'} holds no finished cell of this study ({found} cell file(s) there, "
            "none with these architectures, variants, densities, seeds and recipe): run the "
            "study first, or pass the options the cells were run with; nothing was written"
        )
    summary = {"plan": _plan_dict(plan), "rows": rows}
    write_text_atomic(out / f"{plan.name}.json", json.dumps(summary, indent=2))
    write_text_atomic(out / f"{plan.name}.md", format_table(rows, plan))
    if rows:
        plot_accuracy(rows, out / _figure_name(plan, "accuracy"))
        plot_delta(rows, out / _figure_name(plan, "delta"))
    return summary


def format_table(rows: list[dict[str, Any]], plan: StudyPlan) -> str:
    """Markdown: one table per architecture, variants as rows, densities as columns."""
    recipe = plan.recipe
    varied = "; ".join(
        f"{name} {', '.join(map(option_text, values))}" for name, values in plan.factors.items()
    )
    lines = [
        "# n2nonnx study",
        "",
        f"Data {plan.data}; {recipe['epochs']} epochs, {recipe['optimizer']} lr {recipe['lr']}, batch "
        f"{recipe['batch_size']}, weight decay {recipe['weight_decay']}, {recipe['schedule']} schedule; "
        f"seeds {list(plan.seeds)}; fan-in-corrected init of kept weights: {plan.rescale}"
        + (f"; varied: {varied}" if varied else "")
        + ". Test accuracy (%) in onnxruntime, mean +- std over seeds; delta = heat-diffusion "
        "delta at saturation against the dense graph. Variant defaults: "
        + ", ".join(f"{k} {option_text(v)}" for k, v in _variant_defaults().items())
        + ".",
    ]
    labels = _labels(plan)
    for arch in plan.arch_names():
        mine = [r for r in rows if r["arch"] == arch]
        if not mine:
            continue
        densities = sorted({r["density"] for r in mine if r["variant"] != "dense"}, reverse=True)
        header = " | ".join(f"{d:.0%}" for d in densities)
        lines += [
            "",
            f"## {arch}",
            "",
            f"| variant | {header} |",
            "|---|" + "---|" * len(densities),
        ]
        for label in labels:
            cells = {r["density"]: r for r in mine if r["label"] == label}
            if not cells:
                continue
            if 1.0 in cells and cells[1.0]["variant"] == "dense":
                r = cells[1.0]
                lines.append(
                    f"| {label} | {_accuracy(r, len(plan.seeds))} |" + " |" * (len(densities) - 1)
                )
                continue
            entries = [
                _accuracy(cells[d], len(plan.seeds)) if d in cells else "" for d in densities
            ]
            lines.append(f"| {label} | " + " | ".join(entries) + " |")
        lines += ["", f"| delta (dead units) | {header} |", "|---|" + "---|" * len(densities)]
        for label in labels:
            cells = {r["density"]: r for r in mine if r["label"] == label}
            if not cells or any(r["variant"] == "dense" for r in cells.values()):
                continue
            entries = [
                f"{cells[d]['delta_mean']:.3g} ({cells[d]['dead_units_mean']:.0f})"
                if d in cells and cells[d]["delta_mean"] is not None
                else ""
                for d in densities
            ]
            lines.append(f"| {label} | " + " | ".join(entries) + " |")
    lines += [
        "",
        f"![accuracy vs density]({_figure_name(plan, 'accuracy')})",
        "",
        f"![delta vs density]({_figure_name(plan, 'delta')})",
        "",
    ]
    return "\n".join(lines)


def _accuracy(row: dict[str, Any], planned: int) -> str:
    """``mean +- std``; the number of seeds where fewer than planned have finished."""
    done = len(row["seeds"])
    if done == 1:
        return (
            f"{row['accuracy_mean']:.2f} (1 seed)" if planned > 1 else f"{row['accuracy_mean']:.2f}"
        )
    text = f"{row['accuracy_mean']:.2f} +- {row['accuracy_std']:.2f}"
    return text if done >= planned else f"{text} ({done} seeds)"


def _figure_name(plan: StudyPlan, what: str) -> str:
    """``accuracy_vs_density.png``, or ``NAME-accuracy_vs_density.png`` for a named table."""
    prefix = "" if plan.name == "results" else f"{plan.name}-"
    return f"{prefix}{what}_vs_density.png"


def _variant_defaults() -> dict[str, Any]:
    return {name: f.default for name, f in FACTORS.items() if f.default is not None}


def _figure(rows, key, path: Path, ylabel: str, log_y: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    if not archs:  # e.g. only the dense variant: no delta to draw
        return
    figure, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 4), squeeze=False)
    for axis, arch in zip(axes[0], archs, strict=True):
        for label in dict.fromkeys(r["label"] for r in rows):
            points = sorted(
                (r["density"], r[key], r.get("accuracy_std", 0))
                for r in rows
                if r["arch"] == arch and r["label"] == label and r[key] is not None
            )
            if not points:
                continue
            if label == "dense":
                axis.axhline(points[0][1], color="black", linestyle=":", label="dense")
                continue
            x, y, err = zip(*points, strict=True)
            style = "-" if label.startswith("N2NSkip") else "--"
            axis.errorbar(
                [100 * v for v in x],
                y,
                yerr=err if key == "accuracy_mean" else None,
                marker="o",
                linestyle=style,
                capsize=3,
                label=label,
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
        "widths": list(plan.widths),
        "variants": list(plan.variants),
        "densities": list(plan.densities),
        "seeds": list(plan.seeds),
        "factors": {k: list(v) for k, v in plan.factors.items()},
        "data": plan.data,
        "recipe": plan.recipe,
        "rescale": plan.rescale,
        "architectures": {a: arch_spec(a) for a in plan.arch_names()},
        "variant_definitions": {
            k: {"method": m, "allocation": a, "skip_share": s} for k, (m, a, s) in VARIANTS.items()
        },
        "variant_defaults": _variant_defaults(),
    }
