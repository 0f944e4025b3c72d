"""The chosen model on every deployment target: deployed, verified, sized and timed side by side.

For the main job's own model, :func:`deploy_targets` runs :func:`n2nonnx.deployment.deploy`
once per target (:mod:`n2nonnx.deployment.targets`) whose runtime is installed here: each
deployment is verified against the input model in the target's runtime (onnxruntime for
``.onnx`` and ``.ort``, MNN for ``.mnn``); a target that fails is kept as a row with its
one-line reason. :func:`measure_targets` then times every deployed file in its runtime
together with the dense model deployed for onnxruntime, in the same interleaved rounds (1
thread, :func:`~n2nonnx.deployment.timing.interleaved_times`), and takes each latency ratio
as the median over rounds of the per-round ratio to the dense model
(:func:`~n2nonnx.deployment.timing.ratio_medians`). A ratio within :data:`NOISE` of 1 is
below the timing noise ("same as dense").

``tensorrt`` is deployed and timed only where onnxruntime has its TensorRT execution
provider (a GPU build); elsewhere it is listed as not available here.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError, N2NError, ShapeError
from n2nonnx.model import Model

__all__ = [
    "BATCHES",
    "NOISE",
    "TargetRow",
    "check_targets",
    "deploy_targets",
    "measure_targets",
    "report_name",
    "report_names",
    "ratio_text",
    "targets_table",
]

log = logging.getLogger(__name__)

BATCHES = (1, 64)
NOISE = 0.05  # latency ratios within 5% of 1 are below the timing noise
TENSORRT_PROVIDER = "TensorrtExecutionProvider"

NOTES = {
    "ort-mobile": "`.ort` holds dense weights (a minimal build cannot fold the compact "
    "storage); its required-operators config is written beside it",
    "tensorrt": "2:4-sparse weights for TensorRT's sparse kernels; run it with the provider "
    "options in `results.json`",
    "mnn": "`.mnn` holds dense weights (MNN's converter folds the compact storage); timed "
    "through MNN's Python module API, input conversion included",
}

RUNTIMES = {
    "onnxruntime": "onnxruntime (CPU)",
    "ort-mobile": "onnxruntime (CPU, ORT format)",
    "tensorrt": "onnxruntime (TensorRT EP)",
    "mnn": "MNN (CPU)",
}


@dataclass
class TargetRow:
    """One target's deployment of the chosen model and its measurements.

    Attributes:
        name: the target.
        status: ``ok``, ``failed`` (``reason`` says why) or ``not available here`` (its
            runtime is not installed here).
        reason: one line, for ``failed`` and ``not available here``.
        file: its main file's name in the report folder (``ok`` only).
        bytes: the main file's size.
        runtime: where it was verified and timed.
        verification: the comparison with the input model (JSON-able), and ``agreement``
            its one-line description.
        latency_ms: batch -> median milliseconds per call in ``runtime``.
        ratio: batch -> median over rounds of the latency ratio to the dense model.
        result: the :class:`~n2nonnx.deployment.DeployResult` (not in the JSON).
    """

    name: str
    status: str = "ok"
    reason: str | None = None
    file: str | None = None
    bytes: int | None = None
    runtime: str = ""
    verification: dict[str, Any] | None = None
    agreement: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-able values."""
        return {
            "status": self.status,
            "reason": self.reason,
            "file": self.file,
            "bytes": self.bytes,
            "runtime": self.runtime,
            "verification": self.verification,
            "agreement": self.agreement,
            "latency_ms": self.latency_ms,
            "latency_ratio_to_dense": self.ratio,
        }


def tensorrt_missing() -> str | None:
    """Why the ``tensorrt`` target cannot be timed here (one line), or None."""
    from n2nonnx.runtime import available_providers

    if TENSORRT_PROVIDER in available_providers():
        return None
    return (
        "this onnxruntime has no TensorrtExecutionProvider (needs onnxruntime-gpu with "
        "TensorRT, and a GPU)"
    )


def _missing(name: str) -> str | None:
    from n2nonnx.deployment.targets import get_target

    if name == "tensorrt":
        return tensorrt_missing()
    return get_target(name).missing()


def check_targets(names: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The targets to deploy to, and those listed as not available here.

    Args:
        names: the targets asked for; None: every target, those whose runtime is missing
            listed as not available.

    Returns:
        ``(to deploy, name -> why not available)``.

    Raises:
        InvalidArgumentError: an unknown target, one named twice, or one named explicitly
            whose runtime is not installed here.
    """
    from n2nonnx.deployment.targets import TARGET_NAMES, get_target

    if names is None:
        chosen, absent = [], {}
        for name in TARGET_NAMES:
            missing = _missing(name)
            if missing is None:
                chosen.append(name)
            else:
                absent[name] = missing
        return chosen, absent
    if not names:
        raise InvalidArgumentError(f"--targets needs at least one of {list(TARGET_NAMES)}")
    for name in names:
        get_target(name)
    twice = sorted({name for name in names if list(names).count(name) > 1})
    if twice:
        raise InvalidArgumentError(f"--targets names {', '.join(twice)} more than once")
    for name in names:
        missing = _missing(name)
        if missing is not None:
            raise InvalidArgumentError(f"--targets {name}: not available here: {missing}")
    return list(names), {}


def report_name(name: str) -> str:
    """The target's main file in the report folder (``deployed.onnx``, ``deployed.ort`` ...)."""
    from n2nonnx.deployment.targets import get_target

    if name == "onnxruntime":
        return "deployed.onnx"
    target = get_target(name)
    return (
        f"deployed.{name}{target.suffix}"
        if target.suffix == ".onnx"
        else f"deployed{target.suffix}"
    )


def report_names(name: str) -> list[str]:
    """Every file the target writes into the report folder, the main one first."""
    from n2nonnx.deployment.targets import get_target, output_paths

    main = report_name(name)
    paths = output_paths(main, ["", *get_target(name).companions])
    return [paths[key].name for key in paths]


def deploy_targets(
    model: Model,
    data: Any,
    names: Sequence[str],
    *,
    seed: int = 0,
    absent: dict[str, str] | None = None,
    onnxruntime: Any = None,
) -> dict[str, TargetRow]:
    """Deploy ``model`` to each target in ``names``; a failure becomes a row with its reason.

    Args:
        model: the trained model.
        data: the job's data set (verification inputs).
        names: the targets (from :func:`check_targets`).
        seed: seed of the deployment's random choices.
        absent: targets to list as not available (name -> reason).
        onnxruntime: an existing onnxruntime :class:`~n2nonnx.deployment.DeployResult` of
            ``model`` to reuse for that target.

    Returns:
        name -> :class:`TargetRow`, in ``names`` order (with ``absent``: the registry's).
    """
    from n2nonnx.deployment import deploy

    rows: dict[str, TargetRow] = {}
    for name in names:
        row = TargetRow(name, runtime=RUNTIMES[name], file=report_name(name))
        try:
            if name == "onnxruntime" and onnxruntime is not None:
                result = onnxruntime
            else:
                log.info("deploy: the model for %s", name)
                result = deploy(model, data=data, seed=seed, target=name)
        except Exception as error:  # noqa: BLE001 - one target's failure is a row, not the job's
            _fail(row, error)
        else:
            _fill(row, result)
        rows[name] = row
    for name, reason in (absent or {}).items():
        rows[name] = TargetRow(name, "not available here", reason, runtime=RUNTIMES[name])
    if absent:  # every target: in the registry's order
        from n2nonnx.deployment.targets import TARGET_NAMES

        rows = {name: rows[name] for name in TARGET_NAMES if name in rows}
    return rows


def _fail(row: TargetRow, error: BaseException) -> None:
    """Mark ``row`` failed with the error's first line."""
    if not isinstance(error, N2NError):
        log.debug("target %s failed", row.name, exc_info=error)
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    if not isinstance(error, N2NError):
        line = f"{type(error).__name__}: {line}"
    row.status, row.reason, row.file, row.bytes = "failed", line, None, None
    row.latency_ms, row.ratio = {}, {}


def _fill(row: TargetRow, result: Any) -> None:
    """The row's size and verification from its deployment."""
    row.result = result
    target = result.summary.get("target", {})
    package = result.package
    if package is not None and target.get("suffix") != ".onnx":
        row.bytes = len(package.files[""])
    else:
        row.bytes = result.summary["bytes"]["after"]
    if package is not None and package.verification is not None:  # verified in its runtime
        row.verification = package.verification.to_dict()
        row.agreement = _agreement(package.verification.to_dict())
    elif "repair_change" in target:  # tensorrt: exact against the 2:4-repaired model
        row.verification = {
            "against_repaired": result.verification.to_dict(),
            "repair_change": target["repair_change"],
        }
        row.agreement = (
            _agreement(target["repair_change"]) + " (2:4 repair; exact against the repaired model)"
        )
    else:
        row.verification = result.verification.to_dict()
        row.agreement = _agreement(row.verification)


def _agreement(record: dict[str, Any]) -> str:
    """A short line from a verification record: top-1 agreement and the relative difference."""
    parts = []
    if record.get("top1_agreement") is not None:
        parts.append(f"top-1 {record['top1_agreement']:.2%}")
    parts.append(f"max diff {record['relative']:.2g} of scale")
    if record.get("samples"):
        parts.append(f"{record['samples']} inputs")
    return ", ".join(parts)


class _MNNSession:
    """An MNN module behind onnxruntime's ``run(None, feed)``, for the interleaved timing."""

    def __init__(self, path: Path, inputs: list[str], outputs: list[str], threads: int) -> None:
        from n2nonnx.deployment.targets import mnn

        self._mnn = mnn
        self._inputs = inputs
        self._module = mnn.load(path, inputs, outputs, threads=threads)

    def run(self, _names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._mnn.run(self._module, self._inputs, feed)


def _session(row: TargetRow, folder: Path, threads: int) -> Any:
    """A session on the row's deployed file in its runtime, with ``run(None, feed)``."""
    from n2nonnx.runtime import make_session

    result = row.result
    if row.name in ("onnxruntime",):
        return make_session(result.model, ["CPUExecutionProvider"], threads=threads)
    if row.name == "tensorrt":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        provider_options = {
            k: str(v) for k, v in result.summary["target"]["provider_options"].items()
        }
        return ort.InferenceSession(
            result.model.proto.SerializeToString(),
            sess_options=options,
            providers=[
                (TENSORRT_PROVIDER, provider_options),
                "CUDAExecutionProvider",
                "CPUExecutionProvider",
            ],
        )
    path = folder / (row.file or f"model-{row.name}")
    path.write_bytes(result.package.files[""])
    if row.name == "ort-mobile":
        return make_session(str(path), ["CPUExecutionProvider"], threads=threads)
    proto = result.model.proto
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v.name for v in proto.graph.input if v.name not in initializers]
    return _MNNSession(path, inputs, [v.name for v in proto.graph.output], threads)


def measure_targets(
    rows: dict[str, TargetRow],
    dense: Model,
    *,
    dense_bytes: int | None = None,
    threads: int = 1,
    rounds: int = 7,
) -> dict[str, Any]:
    """Time every deployed target and the dense model in the same interleaved rounds.

    Updates each ``ok`` row's ``latency_ms`` and ``ratio`` in place; a row whose file
    cannot be opened or run in its runtime is marked failed.

    Args:
        rows: from :func:`deploy_targets`.
        dense: the dense model deployed for onnxruntime (the reference of the ratios).
        dense_bytes: its file's size (None: its serialised size).
        threads: intra-op threads of every runtime.
        rounds: interleaved timing rounds.

    Returns:
        The dense reference (``bytes``, ``latency_ms``) and, per batch, the ``fastest``
        target (the least ratio to the dense model) and those within the timing noise of
        it (their per-round ratio to it within :data:`NOISE`).

    Raises:
        ShapeError: the dense model's input has no known rank.
    """
    from n2nonnx.deployment.timing import interleaved_times, ratio_medians
    from n2nonnx.runtime import make_session

    first = dense.graph_inputs[0]
    if first.shape is None:
        raise ShapeError(
            f"input {first.name!r} has no known rank; load the model with its input shapes"
        )
    size = len(dense.proto.SerializeToString()) if dense_bytes is None else dense_bytes
    reference: dict[str, Any] = {"bytes": size, "latency_ms": {}}
    fastest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="n2nonnx-targets-") as scratch:
        sessions: list[Any] = [make_session(dense, ["CPUExecutionProvider"], threads=threads)]
        timed: list[TargetRow] = []
        rng = np.random.default_rng(0)
        feeds = {}
        for batch in BATCHES:
            shape = [batch, *(d if isinstance(d, int) else 1 for d in first.shape[1:])]
            feeds[batch] = {first.name: rng.standard_normal(shape).astype(np.float32)}
        for row in rows.values():
            if row.status != "ok":
                continue
            try:  # open it and run it once at each batch before the timing
                session = _session(row, Path(scratch), threads)
                for feed in feeds.values():
                    session.run(None, dict(feed))
            except Exception as error:  # noqa: BLE001 - the runtime's own kinds
                _fail(row, error)
                continue
            sessions.append(session)
            timed.append(row)
        for batch in BATCHES:
            calls = 20 if batch == 1 else 3
            times = interleaved_times(sessions, feeds[batch], rounds=rounds, calls=calls)
            ratios = ratio_medians(times)
            key = str(batch)
            reference["latency_ms"][key] = 1e3 * float(np.median(times[0]))
            for position, row in enumerate(timed, start=1):
                row.latency_ms[key] = 1e3 * float(np.median(times[position]))
                row.ratio[key] = ratios[position]
            if timed:
                best = min(range(len(timed)), key=lambda i: timed[i].ratio[key])
                against = ratio_medians(times, base=best + 1)
                fastest[key] = {
                    "target": timed[best].name,
                    "within_noise": [
                        row.name
                        for position, row in enumerate(timed, start=1)
                        if position != best + 1 and against[position] <= 1 + NOISE
                    ],
                }
    return {"dense": reference, "fastest": fastest, "noise": NOISE, "threads": threads}


def ratio_text(value: float) -> str:
    """A latency ratio as text: ``same as dense`` within :data:`NOISE` of 1, else ``0.62x``."""
    return "same as dense" if abs(value - 1) <= NOISE else f"{value:.2f}x"


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 2**20 else f"{count / 2**20:.2f} MiB"


def targets_table(rows: dict[str, TargetRow], measured: dict[str, Any]) -> str:
    """The Markdown table of the targets, and a line naming the fastest at each batch."""
    dense = measured["dense"]
    lines = [
        "| target | file | size (vs dense) | runtime | latency b=1 (vs dense) "
        "| latency b=64 (vs dense) | agreement with the input model |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for row in rows.values():
        if row.status != "ok":
            lines.append(f"| {row.name} | {row.status}: {row.reason} | | {row.runtime} | | | |")
            continue
        if row.name in NOTES:
            notes.append(f"- {row.name}: {NOTES[row.name]}.")
        size = f"{_size(row.bytes or 0)} ({(row.bytes or 0) / dense['bytes']:.3f}x)"
        latency = [
            f"{row.latency_ms[str(b)]:.3f} ms ({ratio_text(row.ratio[str(b)])})" for b in BATCHES
        ]
        lines.append(
            f"| {row.name} | `{row.file}` | {size} | {row.runtime} | {latency[0]} | {latency[1]} "
            f"| {row.agreement} |"
        )
    lines += ["", _fastest_line(rows, measured)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _fastest_line(rows: dict[str, TargetRow], measured: dict[str, Any]) -> str:
    """``Fastest: ...`` per batch, with the targets within the timing noise of it."""
    parts = []
    for batch in BATCHES:
        entry = measured["fastest"].get(str(batch))
        if entry is None:
            continue
        best = rows[entry["target"]]
        text = f"at batch {batch} **{best.name}** ({ratio_text(best.ratio[str(batch)])})"
        if entry["within_noise"]:
            text += f", {', '.join(entry['within_noise'])} within the timing noise of it"
        parts.append(text)
    if not parts:
        return "No target could be timed."
    return "Fastest: " + "; ".join(parts) + "."
