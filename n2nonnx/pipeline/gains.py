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


def measure_latency(candidates: dict[str, Candidate], *, threads: int = 1, rounds: int = 7) -> None:
    """Add ``latency_ms`` (batch -> median ms) to each candidate's numbers, interleaved.

    Args:
        candidates: the deployed models (their numbers are updated in place).
        threads: onnxruntime intra-op threads of every session.
        rounds: interleaved timing rounds.

    Raises:
        ShapeError: the first model's input has no known rank.
    """
    from n2nonnx.deployment.timing import interleaved_medians
    from n2nonnx.runtime import make_session

    labels = list(candidates)
    sessions = [make_session(candidates[label].deployed, threads=threads) for label in labels]
    first = candidates[labels[0]].deployed.graph_inputs[0]
    if first.shape is None:
        raise ShapeError(
            f"input {first.name!r} has no known rank; load the model with its input shapes"
        )
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        shape = [batch, *(d if isinstance(d, int) else 1 for d in first.shape[1:])]
        feed = {first.name: rng.standard_normal(shape).astype(np.float32)}
        calls = 20 if batch == 1 else 3
        medians = interleaved_medians(sessions, feed, rounds=rounds, calls=calls)
        for label, seconds in zip(labels, medians, strict=True):
            candidates[label].numbers.setdefault("latency_ms", {})[str(batch)] = 1e3 * seconds


def gains_table(candidates: dict[str, Candidate], reference: str = "dense") -> str:
    """The Markdown comparison table, ratios against ``reference`` where it is present."""
    base = candidates.get(reference)
    lines = [
        "| model | test accuracy | non-zeros | deployed file | latency b=1 | latency b=64 |",
        "|---|---|---|---|---|---|",
    ]
    for label, candidate in candidates.items():
        n = candidate.numbers
        cells = [
            label,
            f"{n['test_accuracy']:.2%}",
            f"{n['nonzeros']:,}",
            _size(n["deployed_bytes"]),
        ]
        if base is not None and label != reference:
            cells[3] += f" ({n['deployed_bytes'] / base.numbers['deployed_bytes']:.3f}x)"
        for batch in BATCHES:
            ms = n["latency_ms"][str(batch)]
            ratio = ""
            if base is not None and label != reference:
                ratio = f" ({ms / base.numbers['latency_ms'][str(batch)]:.2f}x)"
            cells.append(f"{ms:.3f} ms{ratio}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gains(candidates: dict[str, Candidate], path: Any) -> None:
    """Bar charts of accuracy, deployed size and latency (batch 1 and 64) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(candidates)
    numbers = [candidates[label].numbers for label in labels]
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
