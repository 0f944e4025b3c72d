"""``run_job``: the main job with its report folder, baselines and deployed comparison.

:func:`run_job` runs :func:`~n2nonnx.pipeline.job.sparsify` on the user's model (or the
built-in one), trains the baselines with the same recipe (the dense model and the same
density without skips) on the training split less a validation part held out with the
seed, deploys all of them, measures them side by side in onnxruntime
(:mod:`~n2nonnx.pipeline.gains`), chooses the deployed model by validation accuracy (or
as ``deploy_choice`` says) and states the verdict (:mod:`~n2nonnx.pipeline.verdict`),
deploys the chosen model to every chosen deployment target and times those side by side
in their runtimes (:mod:`~n2nonnx.pipeline.targets`), and writes the report folder.
Nothing is written until the work has succeeded, and existing files are replaced only
with ``force``.
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


#: what connectivity.png's axes mean, printed under its panels
CONNECTIVITY_CAPTION = (
    "Top: which unit feeds which (a dot: a connection), units numbered from input to output, "
    "for the dense reference, the model without skips and the N2NSkip model. Bottom left: "
    "delta(t), the heat-diffusion distance of each model's graph from the dense one at "
    "diffusion time t (dashed: at saturation, t -> inf; lower is closer to dense). Bottom "
    "right: the scree alpha(beta, t), the share of the heat carried by the beta smallest "
    "non-zero Laplacian eigenvalues."
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
    deploy_choice: str = "best",
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
            compare them (turn off for large models). With them, a validation part of the
            training split is held out with the seed and every model trains on the rest.
        deploy: deploy the trained models and measure them; the chosen one is written as
            ``deployed.onnx``. Without it the baselines are still trained and compared.
        deploy_choice: which model ``deployed.onnx`` is: ``best`` (the sparse model with
            the highest accuracy on the validation part of the training split), ``n2nskip``
            (the job's N2NSkip model) or ``pruned`` (the same density without skips).
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
    from n2nonnx.pipeline.verdict import deploy_label
    from n2nonnx.zoo import export_builtin

    validate(config)
    several = baselines and config.method != "dense"
    plain = replace(config, skip_share=0.0, connectivity=False)
    asked = deploy_label(
        deploy_choice,
        {
            "n2nskip": config.label if config.skip_share > 0 and config.method != "dense" else None,
            "pruned": (
                plain.label
                if config.method != "dense" and (several or config.skip_share == 0)
                else None
            ),
        },
    )
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
    dataset, validation = _datasets(dense, data, config, several)
    result = sparsify(dense, dataset, config, progress=progress)
    jobs = _train_baselines(dense, dataset, config, result, several, progress)
    if not main_process:
        return JobFiles(result)  # under torchrun: the other processes only help train
    trained = {label: job.trained for label, job in jobs.items()}
    rows = _trained_rows(jobs, validation)
    if validation is not None:
        result.numbers["validation"] = dataset.info["validation"]
    sparse = [label for label in trained if label != "dense" or config.method == "dense"]
    verdict_rows: dict[str, Any] = rows
    gains: dict[str, Any] = {}
    timing = deployed = None
    target_table = None
    target_rows: dict[str, Any] = {}
    candidates: dict[str, Any] = {}
    if deploy:
        from n2nonnx.pipeline.verdict import choose_deployed

        label, why = choose_deployed(
            sparse,
            {k: v["validation_accuracy"] for k, v in rows.items() if "validation_accuracy" in v},
            asked,
            config.label,
        )
        deployed = {"label": label, "why": why}
        result.numbers["deployed"] = deployed
        candidates, timing = _compare(dataset, trained, config.seed)
        for name, candidate in candidates.items():
            if "validation_accuracy" in rows[name]:
                candidate.numbers["validation_accuracy"] = rows[name]["validation_accuracy"]
        gains = {name: c.numbers for name, c in candidates.items()}
        verdict_rows = gains
        result.numbers["gains"] = gains
        result.numbers["latency"] = timing
        target_rows, measured, target_table = _compare_targets(
            dense, dataset, candidates, config, label, chosen, absent
        )
        result.numbers["targets"] = {
            **measured,
            "rows": {name: row.to_dict() for name, row in target_rows.items()},
        }
    elif len(rows) > 1:
        result.numbers["comparison"] = rows
    report_table = None
    if len(verdict_rows) > 1 or deploy:
        from n2nonnx.pipeline.gains import gains_table

        report_table = gains_table(verdict_rows, deployed=deployed["label"] if deployed else None)
    verdict = _verdict(verdict_rows, config, timing, deployed)
    with _report_folder(out) as staging:  # every file, or none: staged, then renamed into out
        files: dict[str, Path] = {}
        if model is None:
            files["dense"] = save(dense, staging / "dense.onnx")
        files["model"] = save(result.trained, staging / "model.onnx")
        if deploy and deployed is not None:
            files["deployed"] = save(
                candidates[deployed["label"]].deployed, staging / "deployed.onnx"
            )
            for name, row in target_rows.items():
                if row.status == "ok" and name != "onnxruntime":
                    files[f"deployed_{name.replace('-', '_')}"] = row.result.save(
                        staging / row.file
                    )
            from n2nonnx.pipeline.gains import plot_gains

            plot_gains(gains, staging / "gains.png")
            files["gains"] = staging / "gains.png"
        histories = {name: job.numbers["history"] for name, job in jobs.items()}
        plot_training(histories, staging / "training.png")
        files["training"] = staging / "training.png"
        connectivity = _connectivity(jobs, config, plain.label)
        if connectivity is not None:
            from n2nonnx.connectivity.plots import plot_report

            plot_report(connectivity, staging / "connectivity.png", CONNECTIVITY_CAPTION)
            files["connectivity"] = staging / "connectivity.png"
        result.numbers["files"] = {key: path.name for key, path in files.items()}
        files["results"] = write_text_atomic(
            staging / "results.json", json.dumps(result.numbers, indent=2, default=json_default)
        )
        files["report"] = write_text_atomic(
            staging / "report.md",
            format_report(result.numbers, report_table, target_table, verdict),
        )
    files = {key: out / path.name for key, path in files.items()}
    log.info("wrote %s, %s and %s", files["report"], files["results"], files["model"])
    return JobFiles(result, gains, files, result.numbers.get("targets", {}))


def _datasets(dense: Any, data: Any, config: JobConfig, several: bool) -> tuple[Any, Any]:
    """The data every model trains on, and the validation part (None with one model).

    With several models to choose from, :data:`~n2nonnx.pipeline.verdict.VALIDATION_FRACTION`
    of the training split is held out with the job's seed; the test split is never used
    for the choice.
    """
    from n2nonnx.data import resolve_data
    from n2nonnx.pipeline.verdict import split_validation

    info = dense.graph_inputs[0]
    dataset = resolve_data(data, input_shape=info.shape, seed=config.seed, input_name=info.name)
    if not several:
        return dataset, None
    return split_validation(dataset, config.seed)


def _trained_rows(jobs: dict[str, JobResult], validation: Any) -> dict[str, Any]:
    """Each model's test accuracy, non-zeros (trained model) and validation accuracy, by label."""
    from n2nonnx.pipeline.verdict import validation_accuracies

    accuracies = (
        validation_accuracies({k: j.trained for k, j in jobs.items()}, validation)
        if validation is not None
        else {}
    )
    rows: dict[str, Any] = {}
    for label, job in jobs.items():
        numbers = job.numbers
        rows[label] = {
            "test_accuracy": numbers["onnxruntime_test_accuracy"],
            "nonzeros": numbers["sequential_nonzeros"] + numbers["skip_nonzeros"],
            "nonzeros_counted": "trained",
        }
        if label in accuracies:
            rows[label]["validation_accuracy"] = accuracies[label]
    return rows


def _verdict(rows: dict[str, Any], config: JobConfig, timing: Any, deployed: Any) -> list[str]:
    """The verdict lines of the report (one seed: the noise is stated as unknown)."""
    from n2nonnx.pipeline.verdict import verdict_lines

    return verdict_lines(rows, seeds=[config.seed], timing=timing, deployed=deployed)


def _connectivity(jobs: dict[str, JobResult], config: JobConfig, plain: str) -> Any:
    """The connectivity report of the plot: the job's model, and the no-skip baseline beside it."""
    own = jobs[config.label].connectivity
    if own is None or plain not in jobs or plain == config.label:
        return own
    from n2nonnx.connectivity import analyze

    log.info("connectivity: %s beside %s, for the figure", plain, config.label)
    return analyze(
        None, jobs[plain].trained, jobs[config.label].trained, names=[plain, config.label]
    )


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
    dense: Any, dataset: Any, config: JobConfig, result: JobResult, several: bool, progress: bool
) -> dict[str, JobResult]:
    """The dense model and the same density without skips, trained with the job's recipe.

    Returns:
        label -> the :class:`JobResult` of each training, the job's own last.
    """
    jobs: dict[str, JobResult] = {}
    if several:
        log.info("baseline: the dense model, same recipe")
        jobs["dense"] = sparsify(
            dense,
            dataset,
            replace(config, method="dense", skip_share=0.0, connectivity=False),
            progress=progress,
        )
        if config.skip_share > 0:
            plain = replace(config, skip_share=0.0, connectivity=False)
            log.info("baseline: %s without skips, same density and recipe", plain.label)
            jobs[plain.label] = sparsify(dense, dataset, plain, progress=progress)
    jobs[config.label] = result
    return jobs


def _compare(dataset: Any, trained: dict[str, Any], seed: int) -> tuple[dict[str, Any], Any]:
    """Deploy every trained model and time them together: (candidates, timing record)."""
    from n2nonnx.pipeline.gains import deploy_candidates, measure_latency

    candidates = deploy_candidates(trained, dataset, seed=seed)
    return candidates, measure_latency(candidates)


def _compare_targets(
    dense: Any,
    dataset: Any,
    candidates: dict[str, Any],
    config: JobConfig,
    label: str,
    chosen: list[str],
    absent: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Deploy the chosen model (``label``) to each target and time them against the dense model.

    The reference is the trained dense baseline deployed for onnxruntime; without one (no
    baselines) the input model deployed (untrained: the same size and speed).

    Returns:
        ``(name -> TargetRow, the timing's numbers, Markdown table)``.
    """
    from n2nonnx.deployment import deploy
    from n2nonnx.pipeline.targets import deploy_targets, measure_targets, targets_table

    own = candidates[label]
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
