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


def plot_training(histories: dict[str, dict[str, Any]], path: Path) -> None:
    """Loss and test-accuracy curves of every training of the job, one colour per model.

    Args:
        histories: label -> that training's history (``History.to_dict()``).
        path: the PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = ["#777777", "#4c72b0", "#dd8452", "#55a868"]
    for index, (label, history) in enumerate(histories.items()):
        rows = history["epochs"]
        epochs = [row["epoch"] for row in rows]
        colour = colours[index % len(colours)]
        style = {"color": colour, "marker": "o", "markersize": 3}
        left.plot(epochs, [row["train_loss"] for row in rows], label=f"{label} train", **style)
        left.plot(
            epochs, [row["test_loss"] for row in rows], ls="--", label=f"{label} test", **style
        )
        right.plot(epochs, [100 * row["test_accuracy"] for row in rows], label=label, **style)
    left.set(
        xlabel="epoch",
        ylabel="cross-entropy loss",
        title="loss of each model: training (solid), test split (dashed)",
    )
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy of each model")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


#: the abbreviations of a report, explained once in it
GLOSSARY = {
    "N2NSkip": "neuron-to-neuron skip connections added within the same non-zero budget",
    "CSP": "SNIP (connection sensitivity) pruning at a global threshold",
    "RP": "random pruning",
    "SCL": "sparsity learned during training (masks searched, then fine-tuned)",
    "ERK": "Erdős-Rényi-Kernel allocation of the sequential budget over layers",
    "b=1, b=64": "batch size of the latency measurement",
    "ORT": "onnxruntime",
    "KiB": "1024 bytes",
    "delta": "heat-diffusion distance of the model's graph from the dense one (0: same)",
}


def glossary_lines(text: str) -> list[str]:
    """The :data:`GLOSSARY` entries whose abbreviation appears in ``text``, as Markdown."""
    used = [
        (name, meaning)
        for name, meaning in GLOSSARY.items()
        if any(part in text for part in name.split(", "))
    ]
    if not used:
        return []
    return [
        "Names used: " + "; ".join(f"**{name}**: {meaning}" for name, meaning in used) + ".",
        "",
    ]


def format_report(
    numbers: dict[str, Any],
    gains: str | None = None,
    targets: str | None = None,
    verdict: list[str] | None = None,
) -> str:
    """The Markdown report of one job.

    Args:
        numbers: every number of the job (``results.json``).
        gains: the comparison table of the trained models (deployed, or not).
        targets: the table of the deployed model on each deployment target.
        verdict: the verdict's lines (:func:`~n2nonnx.pipeline.verdict.verdict_lines`).
    """
    config = numbers["config"]
    recipe = config["recipe"]
    chosen = numbers.get("deployed", {})
    validation = numbers.get("validation")
    data_line = f"Data: {numbers['data']}. Seed {config['seed']}."
    if validation:
        data_line += (
            f" {validation['samples']:,} samples of the training split "
            f"({validation['fraction']:.0%}, drawn with the seed) are held out as the validation "
            "split that chooses the deployed model; every model trains on the rest, and the "
            "test split is used for the reported accuracies only."
        )
    lines = [
        f"# n2nonnx: {numbers['label']} at {numbers['density']:.1%} density",
        "",
        data_line,
        "",
        *(verdict or []),
        "<glossary>",
    ]
    if gains:
        deployed = bool(chosen)
        if deployed:
            how = (
                "Each model trained with the same recipe, deployed (`n2nonnx deploy`: masks "
                "folded, dead units removed, compact storage) and timed in onnxruntime in the "
                "same run (1 thread, interleaved rounds; latency ratios are medians over rounds "
                'of the per-round ratio to the dense model, and within 5% of 1 read "same as '
                'dense"). Non-zero weights are counted in the deployed model.'
            )
        else:
            how = (
                "Each model trained with the same recipe; not deployed (`--no-deploy`), so no "
                "file sizes or latencies. Non-zero weights are counted in the trained model."
            )
        lines += ["## What did I gain", "", how, "", gains, ""]
        if deployed:
            lines += ["![gains](gains.png)", ""]
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
            f"The model chosen for deployment ({chosen.get('label', numbers['label'])}), deployed "
            "for each target (`n2nonnx deploy --target`), "
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
        lines += [
            f"## The job's own model: {numbers['label']} (`model.onnx`)",
            "",
            "Densities count the trained model's non-zero weights (before deployment).",
            "",
        ]
    lines += [
        "| | |",
        "|---|---|",
        f"| method | {config['method']}"
        + (
            f" ({'ERK' if config['allocation'] == 'erk' else config['allocation']} allocation) |"
            if config["method"] != "dense"
            else " |"
        ),
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
        "Training curves of every model of the job (loss: cross-entropy on the training "
        "split, solid, and on the test split, dashed; right: test accuracy):",
        "",
        "![training curves](training.png)",
    ]
    if "connectivity" in numbers:
        lines += [
            "",
            "Connectivity: top, the unit-to-unit adjacency of the dense reference and of "
            "each sparse model, the model without skips included (rows and columns: units "
            "from input to output; a dot: a connection); bottom left, the heat-diffusion "
            "distance delta(t) from the dense graph over diffusion time t (dashed: at "
            "saturation; lower: closer to dense); bottom right, the scree alpha(beta, t), the "
            "share of the heat carried by the beta smallest non-zero Laplacian eigenvalues:",
            "",
            "![connectivity](connectivity.png)",
        ]
    lines += [
        "",
        "Every number is in `results.json`; the job's trained model is `model.onnx`"
        + (f", the deployed one ({chosen['label']}) `deployed.onnx`" if chosen else "")
        + "".join(
            f", `{row['file']}` ({name})"
            for name, row in numbers.get("targets", {}).get("rows", {}).items()
            if row["status"] == "ok" and name != "onnxruntime"
        )
        + "."
        + (
            " `dense.onnx` is the built-in model untrained, as it was exported before the "
            "job (not the trained dense baseline, which is not saved)."
            if "dense" in numbers.get("files", {})
            else ""
        ),
        "",
    ]
    text = "\n".join(lines)
    return text.replace("<glossary>\n", "\n".join(glossary_lines(text)) + "\n", 1)
