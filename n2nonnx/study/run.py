"""Running a study: every missing cell, one after the other, each kept as soon as it ends."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from n2nonnx.paths import check_output_dir, write_text_atomic
from n2nonnx.pipeline import json_default, sparsify, validate
from n2nonnx.study.grid import Cell, StudyPlan, arch_spec, cell_path
from n2nonnx.study.summary import summarize, well_formed
from n2nonnx.zoo import export_builtin

log = logging.getLogger(__name__)


def _done(path: Path, settings: dict[str, Any], cell: Cell) -> bool:
    """A finished cell run with the same settings (a cell from other settings is redone)."""
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return (
        well_formed(record)
        and record.get("settings") == json.loads(json.dumps(settings))
        and record.get("options", {}) == json.loads(json.dumps(dict(cell.options)))
    )


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
        The summary (also written to ``out/<plan.name>.json``); None on the other processes.

    Raises:
        InvalidArgumentError: a cell whose job is invalid (checked before any cell runs).
    """
    from tqdm import tqdm

    import n2nonnx

    out = check_output_dir(out)
    cells = plan.cells()
    todo = [c for c in cells if not _done(cell_path(out, c), plan.settings(c.arch), c)]
    if agree is not None:
        todo = agree(todo)
    if len(todo) < len(cells):
        log.info("resuming: %d of %d cells already done", len(cells) - len(todo), len(cells))
    for cell in todo:  # a bad option fails here, before any model is exported or saved
        validate(plan.job(cell))
    models, unsaved = _models(plan, out, sorted({cell.arch for cell in todo}))
    for cell in todo:  # a density that keeps no weight fails here, before any cell runs
        _check_density(plan, cell, models[cell.arch])
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc="study",
        unit="cell",
        disable=None if progress and main_process else True,
    )
    try:
        for cell in todo:
            if (
                cell.arch in unsaved and main_process
            ):  # written with its first cell: a failing study leaves nothing
                path = out / "models" / f"{cell.arch}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                n2nonnx.save(unsaved.pop(cell.arch), path)
            numbers = sparsify(models[cell.arch], plan.data, plan.job(cell)).numbers
            numbers.update(
                arch=cell.arch,
                variant=cell.variant,
                options=dict(cell.options),
                label=cell.label,
                seed=cell.seed,
                settings=plan.settings(cell.arch),
            )
            if not main_process:
                continue
            target = cell_path(out, cell)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                target, json.dumps(numbers, default=json_default)
            )  # complete or absent
            bar.update()
            bar.write(
                f"{cell.arch:8s} {cell.label:24s} density {cell.density:<5g} seed {cell.seed}: "
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


def _check_density(plan: StudyPlan, cell: Cell, model: Any) -> None:
    """Refuse a cell whose density keeps no weight of its model's sequential layers."""
    from n2nonnx.errors import InvalidArgumentError

    if cell.variant == "dense":
        return
    config = plan.job(cell)
    prunable = sum(layer.parameters for layer in model.layers)
    share = 0.0 if config.method == "scl" else config.skip_share  # SCL counts skips in the budget
    if cell.density * (1 - share) * prunable < 1:
        smallest = 1 / max(prunable * (1 - share), 1)
        raise InvalidArgumentError(
            f"density {cell.density:g} keeps no weight of {cell.arch}'s {prunable:,} prunable "
            f"weights in {cell.label}; the smallest density that keeps one is {smallest:.3g}: "
            "pass larger --densities"
        )


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
                factory, options = arch_spec(arch)
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
