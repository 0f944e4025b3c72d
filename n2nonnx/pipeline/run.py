"""``run_job``: the main job with its report folder, baselines and deployed comparison.

:func:`run_job` runs :func:`~n2nonnx.pipeline.job.sparsify` on the user's model (or the
built-in one), trains the baselines with the same recipe (the dense model and the same
density without skips), deploys all of them, measures them side by side in onnxruntime
(:mod:`~n2nonnx.pipeline.gains`), deploys the job's own model to every chosen deployment
target and times those side by side in their runtimes (:mod:`~n2nonnx.pipeline.targets`),
and writes the report folder. Nothing is written until the
work has succeeded, and existing files are replaced only with ``force``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from n2nonnx.pipeline.job import JobConfig, JobResult, sparsify, validate
from n2nonnx.pipeline.report import json_default

__all__ = ["REPORT_FILES", "JobFiles", "run_job"]

log = logging.getLogger(__name__)

REPORT_FILES = (
    "model.onnx",
    "deployed.onnx",
    "results.json",
    "report.md",
    "training.png",
    "connectivity.png",
    "gains.png",
)


@dataclass
class JobFiles:
    """What :func:`run_job` returns: the main result, the comparison, and the files written."""

    result: JobResult
    gains: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)


def run_job(
    model: str | Path | None,
    data: Any,
    config: JobConfig,
    out: str | Path,
    *,
    arch: str = "mlp",
    baselines: bool = True,
    deploy: bool = True,
    force: bool = False,
    progress: bool = False,
    main_process: bool = True,
    targets: Sequence[str] | None = None,
) -> JobFiles:
    """The main job with its files: ``model.onnx``, ``deployed.onnx``, ``results.json``, ``report.md``.

    Args:
        model: an ``.onnx`` path, or None for the built-in ``arch`` (written as ``dense.onnx``).
        data: anything :func:`n2nonnx.data.resolve_data` accepts.
        config: what to do.
        out: the report folder (created once the work succeeded).
        arch: the built-in architecture when ``model`` is None (``mlp`` or ``vgg1d``).
        baselines: also train the dense model and the same density without skips, and
            compare all deployed models (turn off for large models).
        deploy: deploy the trained models (``deployed.onnx``) and measure them.
        force: replace report files that exist.
        progress: show training progress bars.
        main_process: False on the other processes under ``torchrun``: they train (every
            training is collective) but deploy, measure and write nothing.
        targets: the deployment targets the job's model is deployed to and timed on
            (``deployed.<suffix>`` each; ``deployed.onnx`` is always written). None: every
            target whose runtime is installed here (the others listed as not available);
            ``["onnxruntime"]``: that one only.

    Returns:
        The :class:`JobFiles`.

    Raises:
        InvalidArgumentError: a bad option (an unknown target, or one named whose runtime
            is not installed here), or report files that exist without ``force``.
        DataError: data that does not fit the model (checked before any work).
        SaveError: the report folder cannot be written (nothing is left in it then).
    """
    from n2nonnx.io import load, save
    from n2nonnx.paths import check_output_dir, check_output_file, write_text_atomic
    from n2nonnx.pipeline.report import format_report, plot_training
    from n2nonnx.pipeline.targets import check_targets, report_names
    from n2nonnx.zoo import export_builtin

    validate(config)
    chosen, absent = check_targets(targets) if deploy else ([], {})
    out = check_output_dir(out)
    names = list(REPORT_FILES) + (["dense.onnx"] if model is None else [])
    names += [n for target in chosen for n in report_names(target) if n not in names]
    for name in names:
        check_output_file(
            out / name, label=f"--out: {name}", force=force, inputs=[model], new_folder=True
        )
    with tempfile.TemporaryDirectory() as scratch:
        source = (
            model
            if model is not None
            else export_builtin(arch, Path(scratch) / "dense.onnx", config.seed)
        )
        dense = load(source)
    result = sparsify(dense, data, config, progress=progress)
    gains: dict[str, Any] = {}
    gains_table = target_table = None
    rows: dict[str, Any] = {}
    if deploy:
        dataset, trained = _train_baselines(dense, data, config, result, baselines, progress)
        if not main_process:
            return JobFiles(result)  # under torchrun: the other processes only help train
        gains, gains_table, candidates = _compare(dataset, trained, config.seed)
        result.numbers["gains"] = gains
        rows, measured, target_table = _compare_targets(
            dense, dataset, candidates, config, chosen, absent
        )
        result.numbers["targets"] = {
            **measured,
            "rows": {name: row.to_dict() for name, row in rows.items()},
        }
    if not main_process:
        return JobFiles(result)
    with _report_folder(out) as staging:  # every file, or none: staged, then renamed into out
        files: dict[str, Path] = {}
        if model is None:
            files["dense"] = save(dense, staging / "dense.onnx")
        files["model"] = save(result.trained, staging / "model.onnx")
        if deploy:
            files["deployed"] = save(candidates[config.label].deployed, staging / "deployed.onnx")
            for name, row in rows.items():
                if row.status == "ok" and name != "onnxruntime":
                    files[f"deployed_{name.replace('-', '_')}"] = row.result.save(
                        staging / row.file
                    )
            from n2nonnx.pipeline.gains import plot_gains

            plot_gains(candidates, staging / "gains.png")
            files["gains"] = staging / "gains.png"
        plot_training(result.numbers["history"], config.label, staging / "training.png")
        files["training"] = staging / "training.png"
        if result.connectivity is not None:
            from n2nonnx.connectivity.plots import plot_report

            plot_report(result.connectivity, staging / "connectivity.png")
            files["connectivity"] = staging / "connectivity.png"
        result.numbers["files"] = {key: path.name for key, path in files.items()}
        files["results"] = write_text_atomic(
            staging / "results.json", json.dumps(result.numbers, indent=2, default=json_default)
        )
        files["report"] = write_text_atomic(
            staging / "report.md", format_report(result.numbers, gains_table, target_table)
        )
    files = {key: out / path.name for key, path in files.items()}
    log.info("wrote %s, %s and %s", files["report"], files["results"], files["model"])
    return JobFiles(result, gains, files, result.numbers.get("targets", {}))


@contextmanager
def _report_folder(out: Path) -> Iterator[Path]:
    """A scratch folder inside ``out`` whose files are renamed into ``out`` when the block succeeds.

    ``out`` (and any missing parent) is created here and removed again if the block fails,
    so a failed job leaves neither a half-written report nor an empty folder.
    """
    from n2nonnx.errors import SaveError
    from n2nonnx.io import SCRATCH_MARKER, make_scratch

    created = out
    while not created.parent.exists():
        created = created.parent
    fresh = not created.exists()
    staging = None
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            staging = make_scratch(out)
        except OSError as error:
            raise SaveError(
                f"cannot write the report folder {out}: {error.strerror or error}"
            ) from None
        yield staging
        for path in staging.iterdir():
            if path.name != SCRATCH_MARKER:
                os.replace(path, out / path.name)
    except BaseException:
        if fresh:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _train_baselines(
    dense: Any, data: Any, config: JobConfig, result: JobResult, baselines: bool, progress: bool
) -> tuple[Any, dict[str, Any]]:
    """The dense model and the same density without skips, trained with the job's recipe.

    Returns:
        ``(dataset, label -> trained model)``, the job's own model last.
    """
    from n2nonnx.data import resolve_data

    info = dense.graph_inputs[0]
    dataset = resolve_data(data, input_shape=info.shape, seed=config.seed, input_name=info.name)
    trained = {}
    if baselines and config.method != "dense":
        log.info("baseline: the dense model, same recipe")
        trained["dense"] = sparsify(
            dense, dataset, replace(config, method="dense", skip_share=0.0), progress=progress
        ).trained
        if config.skip_share > 0:
            plain = replace(config, skip_share=0.0, connectivity=False)
            log.info("baseline: %s without skips, same density and recipe", plain.label)
            trained[plain.label] = sparsify(dense, dataset, plain, progress=progress).trained
    trained[config.label] = result.trained
    return dataset, trained


def _compare(
    dataset: Any, trained: dict[str, Any], seed: int
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Deploy every trained model and time it: (numbers, Markdown table, candidates)."""
    from n2nonnx.pipeline.gains import deploy_candidates, gains_table, measure_latency

    candidates = deploy_candidates(trained, dataset, seed=seed)
    measure_latency(candidates)
    return (
        {label: c.numbers for label, c in candidates.items()},
        gains_table(candidates),
        candidates,
    )


def _compare_targets(
    dense: Any,
    dataset: Any,
    candidates: dict[str, Any],
    config: JobConfig,
    chosen: list[str],
    absent: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Deploy the job's model to each target and time them against the dense model.

    The reference is the trained dense baseline deployed for onnxruntime; without one (no
    baselines) the input model deployed (untrained: the same size and speed).

    Returns:
        ``(name -> TargetRow, the timing's numbers, Markdown table)``.
    """
    from n2nonnx.deployment import deploy
    from n2nonnx.pipeline.targets import deploy_targets, measure_targets, targets_table

    own = candidates[config.label]
    rows = deploy_targets(
        own.trained, dataset, chosen, seed=config.seed, absent=absent, onnxruntime=own.result
    )
    if "dense" in candidates:
        reference, what = candidates["dense"].deployed, "the trained dense baseline"
    else:
        log.info("deploy: the dense input model, the reference of the targets' ratios")
        reference = deploy(dense, data=dataset, seed=config.seed).model
        what = "the dense input model, deployed untrained (the same size and speed)"
    dense_bytes = candidates["dense"].numbers["deployed_bytes"] if "dense" in candidates else None
    measured = measure_targets(rows, reference, dense_bytes=dense_bytes)
    measured["dense"]["model"] = what
    return rows, measured, targets_table(rows, measured)
