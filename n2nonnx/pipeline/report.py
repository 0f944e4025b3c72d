"""The main job's report: Markdown, training curves, and JSON that holds every number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def plot_training(history: dict[str, Any], label: str, path: Path) -> None:
    """Loss and accuracy curves of one training run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [row["epoch"] for row in history["epochs"]]
    left.plot(epochs, [row["train_loss"] for row in history["epochs"]], label="train")
    left.plot(epochs, [row["test_loss"] for row in history["epochs"]], label="test")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    right.plot(epochs, [100 * row["train_accuracy"] for row in history["epochs"]], label="train")
    right.plot(epochs, [100 * row["test_accuracy"] for row in history["epochs"]], label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{label} accuracy")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_report(
    numbers: dict[str, Any], gains: str | None = None, targets: str | None = None
) -> str:
    """The Markdown report of one job.

    Args:
        numbers: every number of the job (``results.json``).
        gains: the deployment comparison table of the trained models.
        targets: the table of the job's model on each deployment target.
    """
    config = numbers["config"]
    recipe = config["recipe"]
    lines = [
        f"# n2nonnx: {numbers['label']} at {numbers['density']:.1%} density",
        "",
        f"Data: {numbers['data']}. Seed {config['seed']}.",
        "",
    ]
    if gains:
        lines += [
            "## What did I gain",
            "",
            "Each model trained with the same recipe, deployed (`n2nonnx deploy`: masks folded, dead "
            "units removed, compact storage) and timed in onnxruntime in the same run (1 thread, "
            "interleaved medians; ratios against the dense model).",
            "",
            gains,
            "",
            "![gains](gains.png)",
            "",
        ]
    if targets:
        measured = numbers.get("targets", {})
        dense = measured.get("dense", {})
        reference = ", ".join(
            f"{dense['latency_ms'][key]:.3f} ms at batch {key}"
            for key in dense.get("latency_ms", {})
        )
        lines += [
            "### On each deployment target",
            "",
            f"This model ({numbers['label']}) deployed for each target (`n2nonnx deploy --target`), "
            "verified against the input model in that target's runtime and timed there with 1 "
            "thread, in the same interleaved rounds as the dense model deployed for onnxruntime "
            f"({dense.get('model', 'the dense model')}; {dense.get('bytes', 0) / 1024:.1f} KiB, "
            f"{reference}). Ratios are medians over rounds of the per-round ratio to it; within "
            f'{measured.get("noise", 0.05):.0%} of 1 is below the timing noise ("same as dense").',
            "",
            targets,
            "",
        ]
    if gains:
        lines += ["## This model", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| method | {config['method']}"
        + (f" ({config['allocation']} allocation) |" if config["method"] != "dense" else " |"),
    ]
    if config["method"] != "dense":
        lines.append(
            f"| N2NSkip share of the budget | {config['skip_share']:.0%} ({config['sampling']} sampling"
            + "".join(f", {key} {value}" for key, value in config["skip_options"].items())
            + ") |"
        )
    for record in numbers.get("repair", []):
        lines.append(
            f"| connectivity repair | {record['moved']:,} weights moved; dead weights "
            f"{record['dead_weights_before']:,} -> {record['dead_weights_after']:,} |"
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
    lines += [
        f"| training | {recipe['epochs']} epochs, {recipe['optimizer']} lr {recipe['lr']}, "
        f"batch {recipe['batch_size']}, weight decay {recipe['weight_decay']}, {recipe['schedule']} schedule |",
        f"| wall time | {numbers['seconds']:.0f} s |",
        "",
        "![training curves](training.png)",
    ]
    if "connectivity" in numbers:
        lines += [
            "",
            "Connectivity (adjacency of the dense reference and this model, delta(t), scree):",
            "",
            "![connectivity](connectivity.png)",
        ]
    lines += [
        "",
        "Every number is in `results.json`; the trained model is `model.onnx`, deployed "
        "`deployed.onnx`"
        + "".join(
            f", `{row['file']}` ({name})"
            for name, row in numbers.get("targets", {}).get("rows", {}).items()
            if row["status"] == "ok" and name != "onnxruntime"
        )
        + ".",
        "",
    ]
    return "\n".join(lines)
