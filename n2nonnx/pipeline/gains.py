"""What did I gain: each trained model deployed and measured side by side in onnxruntime.

For every model of a job (the dense reference, the same-density model without skips, the
N2NSkip model) this deploys the trained model (:func:`n2nonnx.deployment.deploy`), and measures
test accuracy, non-zero weights, the deployed file's size and onnxruntime latency at batch
1 and 64, all in the same run with interleaved rounds (medians), so the ratios compare like
with like on a busy machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from n2nonnx.errors import ShapeError
from n2nonnx.model import Model

log = logging.getLogger(__name__)

BATCHES = (1, 64)


@dataclass
class Candidate:
    """One trained model of the comparison and its deployed form (``result``: deploy's record)."""

    label: str
    trained: Model
    deployed: Model
    numbers: dict[str, Any]
    result: Any = None


def deploy_candidates(
    trained: dict[str, Model], data: Any, *, seed: int = 0
) -> dict[str, Candidate]:
    """Deploy every trained model (verified against it in onnxruntime).

    Args:
        trained: label -> trained model.
        data: the job's data set (verification and test accuracy).
        seed: seed of the deployment's random choices.

    Returns:
        label -> :class:`Candidate` with ``numbers``: test accuracy (deployed, onnxruntime),
        non-zero weights, file bytes of the trained and the deployed model, units removed.
    """
    from n2nonnx.deployment import deploy

    candidates = {}
    for label, model in trained.items():
        log.info("deploy: %s", label)
        result = deploy(model, data=data, seed=seed)
        summary = result.summary
        candidates[label] = Candidate(
            label,
            model,
            result.model,
            {
                "test_accuracy": summary["accuracy"]["after"],
                "nonzeros": summary["weights"]["nonzero_after"],
                "trained_bytes": summary["bytes"]["before"],
                "deployed_bytes": summary["bytes"]["after"],
                "units_removed": summary["units"]["removed"],
            },
            result,
        )
    return candidates


def measure_latency(
    candidates: dict[str, Candidate],
    *,
    reference: str = "dense",
    threads: int = 1,
    rounds: int = 7,
) -> dict[str, Any]:
    """Time every deployed model in the same interleaved rounds; ratios against ``reference``.

    Adds ``latency_ms`` (batch -> median ms) to each candidate's numbers and, where
    ``reference`` is among them, ``latency_ratio`` (batch -> median over rounds of the
    per-round ratio to it, :func:`~n2nonnx.deployment.timing.ratio_medians`).

    Args:
        candidates: the deployed models (their numbers are updated in place).
        reference: the label the ratios are taken against (the first one when absent).
        threads: onnxruntime intra-op threads of every session.
        rounds: interleaved timing rounds.

    Returns:
        Per batch, the ``fastest`` label (least median latency) and the labels
        ``within_noise`` of it (their per-round ratio to it within
        :data:`~n2nonnx.pipeline.targets.NOISE`), and ``noise`` itself.

    Raises:
        ShapeError: the first model's input has no known rank.
    """
    from n2nonnx.deployment.timing import interleaved_times, ratio_medians
    from n2nonnx.pipeline.targets import NOISE
    from n2nonnx.runtime import make_session

    labels = list(candidates)
    sessions = [make_session(candidates[label].deployed, threads=threads) for label in labels]
    first = candidates[labels[0]].deployed.graph_inputs[0]
    if first.shape is None:
        raise ShapeError(
            f"input {first.name!r} has no known rank; load the model with its input shapes"
        )
    base = labels.index(reference) if reference in labels else 0
    rng = np.random.default_rng(0)
    fastest: dict[str, Any] = {}
    for batch in BATCHES:
        shape = [batch, *(d if isinstance(d, int) else 1 for d in first.shape[1:])]
        feed = {first.name: rng.standard_normal(shape).astype(np.float32)}
        calls = 20 if batch == 1 else 3
        times = interleaved_times(sessions, feed, rounds=rounds, calls=calls)
        ratios = ratio_medians(times, base=base)
        key = str(batch)
        for position, label in enumerate(labels):
            numbers = candidates[label].numbers
            numbers.setdefault("latency_ms", {})[key] = 1e3 * float(np.median(times[position]))
            if reference in labels:
                numbers.setdefault("latency_ratio", {})[key] = ratios[position]
        best = min(range(len(labels)), key=lambda i: float(np.median(times[i])))
        against = ratio_medians(times, base=best)
        fastest[key] = {
            "label": labels[best],
            "within_noise": [
                label
                for position, label in enumerate(labels)
                if position != best and against[position] <= 1 + NOISE
            ],
        }
    return {"fastest": fastest, "noise": NOISE, "threads": threads, "rounds": rounds}


def gains_table(
    rows: dict[str, dict[str, Any]], reference: str = "dense", deployed: str | None = None
) -> str:
    """The Markdown comparison table, ratios against ``reference`` where it is present.

    Args:
        rows: label -> the model's numbers (``test_accuracy``, ``nonzeros``, and where it
            was measured ``validation_accuracy``, ``deployed_bytes``, ``latency_ms``,
            ``latency_ratio``).
        reference: the label of the ratios' reference.
        deployed: the label whose deployment is ``deployed.onnx`` (marked in the table).
    """
    from n2nonnx.pipeline.targets import ratio_text

    base = rows.get(reference)
    first = next(iter(rows.values()))
    timed = "latency_ms" in first
    validated = any("validation_accuracy" in n for n in rows.values())
    counted = "deployed" if "deployed_bytes" in first else "trained"
    header = ["model", "test accuracy"]
    header += ["validation accuracy"] if validated else []
    header += [f"non-zero weights ({counted} model)"]
    header += ["deployed file", "latency b=1", "latency b=64"] if timed else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, n in rows.items():
        name = f"**{label}** (deployed)" if label == deployed else label
        cells = [name, f"{n['test_accuracy']:.2%}"]
        if validated:
            value = n.get("validation_accuracy")
            cells.append("" if value is None else f"{value:.2%}")
        cells.append(f"{n['nonzeros']:,}")
        if timed:
            size = _size(n["deployed_bytes"])
            if base is not None and label != reference:
                size += f" ({n['deployed_bytes'] / base['deployed_bytes']:.3f}x)"
            cells.append(size)
            for batch in BATCHES:
                key = str(batch)
                text = f"{n['latency_ms'][key]:.3f} ms"
                if base is not None and label != reference and "latency_ratio" in n:
                    text += f" ({ratio_text(n['latency_ratio'][key])})"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gains(rows: dict[str, dict[str, Any]], path: Any) -> None:
    """Bar charts of accuracy, deployed size and latency (batch 1 and 64) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    numbers = [rows[label] for label in labels]
    panels = [
        ("test accuracy (%)", [100 * n["test_accuracy"] for n in numbers]),
        ("deployed file (KiB)", [n["deployed_bytes"] / 1024 for n in numbers]),
        *[
            (f"latency, batch {b} (ms)", [n["latency_ms"][str(b)] for n in numbers])
            for b in BATCHES
        ],
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for axis, (title, values) in zip(axes, panels, strict=True):
        axis.bar(
            range(len(labels)),
            values,
            color=["#777777", "#4c72b0", "#dd8452", "#55a868"][: len(labels)],
        )
        axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        axis.set_title(title, fontsize=10)
        axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 2**20 else f"{count / 2**20:.2f} MiB"
