"""The main job's verdict: the validation split, which model is deployed, and who wins what.

:func:`split_validation` carves a held-out part of the *training* split (never the test
split) with the job's seed; every model of the job trains on the rest, and
:func:`choose_deployed` picks the model written as ``deployed.onnx`` by its accuracy on
that part (or as ``--deploy`` says). :func:`verdict_lines` states, at the top of the report,
which model wins on accuracy, on size and on latency and by how much, whether the
accuracy difference is larger than the seed-to-seed noise (measured only where several
seeds were trained; else said to be unknown), and latencies within the timing noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from n2nonnx.errors import InvalidArgumentError

__all__ = [
    "DEPLOY_CHOICES",
    "VALIDATION_FRACTION",
    "choose_deployed",
    "deploy_label",
    "seed_noise",
    "split_validation",
    "validation_accuracies",
    "verdict_lines",
]

#: share of the training split held out to choose the deployed model
VALIDATION_FRACTION = 0.1
#: ``--deploy``: the best sparse model by validation accuracy, or the one named
DEPLOY_CHOICES = ("best", "n2nskip", "pruned")


def split_validation(dataset: Any, seed: int, fraction: float = VALIDATION_FRACTION) -> Any:
    """The data set with ``fraction`` of its training split moved into a validation part.

    The part is drawn with ``seed`` (the same samples for the same seed and data); the
    test split is untouched.

    Args:
        dataset: a resolved :class:`~n2nonnx.data.TrainTestData`.
        seed: the job's seed.
        fraction: the share of the training samples held out (at least one is).

    Returns:
        ``(data to train on, validation DataSplit)``; the first's ``info["validation"]``
        records the fraction, seed and sample count.
    """
    from n2nonnx.data import DataSplit, holdout_split

    parts = holdout_split(
        dataset.x_train, dataset.y_train, test_fraction=fraction, seed=seed, name=dataset.name
    )
    info = {
        **dataset.info,
        "validation": {"fraction": fraction, "seed": seed, "samples": len(parts.x_test)},
    }
    fit = replace(dataset, x_train=parts.x_train, y_train=parts.y_train, info=info)
    return fit, DataSplit(parts.x_test, parts.y_test)


def validation_accuracies(trained: Mapping[str, Any], validation: Any) -> dict[str, float]:
    """Accuracy of each trained model on the validation part, in onnxruntime."""
    from n2nonnx.runtime import accuracy

    x, y = validation.x.numpy(), validation.y.numpy()
    return {label: accuracy(model, x, y) for label, model in trained.items()}


def deploy_label(choice: str, labels: Mapping[str, str | None]) -> str | None:
    """The label ``--deploy`` names (None for ``best``), refused where that model is not trained.

    Args:
        choice: one of :data:`DEPLOY_CHOICES`.
        labels: ``{"n2nskip": label or None, "pruned": label or None}``, the models the job
            trains.

    Raises:
        InvalidArgumentError: an unknown choice, or one whose model the job does not train.
    """
    if choice not in DEPLOY_CHOICES:
        raise InvalidArgumentError(f"--deploy must be one of {', '.join(DEPLOY_CHOICES)}")
    if choice == "best":
        return None
    label = labels.get(choice)
    if label is None:
        why = {
            "n2nskip": "this job adds no N2NSkip connections (skip share 0, or method dense)",
            "pruned": "this job trains no model without skips (--no-baselines, or method dense)",
        }[choice]
        raise InvalidArgumentError(f"--deploy {choice}: {why}")
    return label


def choose_deployed(
    sparse: Sequence[str],
    validation: Mapping[str, float],
    asked: str | None,
    own: str,
) -> tuple[str, str]:
    """The label deployed as ``deployed.onnx`` and why, in one sentence.

    Args:
        sparse: the candidates (the job's sparse models; the dense baseline is the
            reference, not a candidate).
        validation: label -> validation accuracy (empty: none held out).
        asked: the label ``--deploy`` named, or None for the best.
        own: the job's own model (``model.onnx``): chosen on a tie, and when alone.

    Returns:
        ``(label, why)``.
    """
    if asked is not None:
        return asked, f"`--deploy` asked for it{_validation_note(asked, validation)}"
    if len(sparse) < 2 or not validation:
        return own, "it is the only sparse model this job trained"
    best = max(validation[label] for label in sparse)
    winners = [label for label in sparse if validation[label] == best]
    label = own if own in winners else winners[0]
    others = ", ".join(f"{o} {validation[o]:.2%}" for o in sparse if o != label)
    why = (
        f"the highest validation accuracy of the sparse models ({validation[label]:.2%}; {others})"
    )
    if len(winners) > 1:
        why += f", tied, so the job's own model {own}"
    return label, why


def _validation_note(label: str, validation: Mapping[str, float]) -> str:
    if label not in validation or len(validation) < 2:
        return ""
    best = max(validation, key=lambda key: validation[key])
    if best == label:
        return f" (it also has the highest validation accuracy, {validation[label]:.2%})"
    return f" (validation accuracy {validation[label]:.2%}; {best} has {validation[best]:.2%})"


def seed_noise(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The standard error of the difference of two models' mean accuracies over seeds.

    ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the sample standard deviations over seeds;
    None unless both models were trained with at least two seeds.
    """
    if len(a) < 2 or len(b) < 2:
        return None

    def variance(values: Sequence[float]) -> float:
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / (len(values) - 1)

    return math.sqrt(variance(a) / len(a) + variance(b) / len(b))


def verdict_lines(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    per_seed: Mapping[str, Sequence[float]] | None = None,
    timing: Mapping[str, Any] | None = None,
    deployed: Mapping[str, Any] | None = None,
    reference: str = "dense",
) -> list[str]:
    """The verdict as Markdown lines: the winner on accuracy, size and latency, and by how much.

    Args:
        rows: label -> numbers (``test_accuracy``, ``nonzeros``; deployed:
            ``deployed_bytes``, ``latency_ms``, ``latency_ratio``).
        seeds: the seeds every model was trained with.
        per_seed: label -> test accuracy of each seed (several seeds: the noise is
            measured from them); None: one seed, the noise is stated as unknown.
        timing: :func:`~n2nonnx.pipeline.gains.measure_latency`'s record (None: not timed).
        deployed: ``{"label", "why"}`` of ``deployed.onnx`` (None: not deployed).
        reference: the dense reference's label.
    """
    labels = list(rows)
    lines = ["## Verdict", ""]
    by_accuracy = sorted(labels, key=lambda label: -rows[label]["test_accuracy"])
    top = by_accuracy[0]
    accuracy = f"- **Accuracy: {top}** ({rows[top]['test_accuracy']:.2%} test accuracy"
    if len(labels) > 1:
        second = by_accuracy[1]
        gap = 100 * (rows[top]["test_accuracy"] - rows[second]["test_accuracy"])
        accuracy += f", {gap:.1f} points above {second}, {rows[second]['test_accuracy']:.2%}"
    lines.append(accuracy + ").")
    sparse = [label for label in labels if label != reference]
    if len(sparse) == 2:
        a, b = sparse
        gap = 100 * (rows[b]["test_accuracy"] - rows[a]["test_accuracy"])
        lines.append(
            f"  At the same density, {b} is {abs(gap):.1f} points "
            f"{'above' if gap >= 0 else 'below'} {a}."
        )
    if len(labels) > 1:
        lines.append("  " + _noise_line(rows, by_accuracy, seeds, per_seed))
    lines.append(_size_line(rows, reference))
    lines.extend(_latency_lines(rows, timing, reference))
    if deployed is not None:
        lines.append(f"- **Deployed (`deployed.onnx`): {deployed['label']}**, {deployed['why']}.")
    return [*lines, ""]


def _noise_line(
    rows: Mapping[str, Mapping[str, Any]],
    by_accuracy: Sequence[str],
    seeds: Sequence[int],
    per_seed: Mapping[str, Sequence[float]] | None,
) -> str:
    top, second = by_accuracy[0], by_accuracy[1]
    if per_seed is None or len(seeds) < 2:
        return (
            f"Trained with one seed ({', '.join(map(str, seeds))}): the seed-to-seed noise is "
            "not measured, so whether these differences are larger than it is unknown; they "
            "are indicative only (`n2nonnx study --seeds 0 1 2` measures the noise)."
        )
    noise = seed_noise(per_seed[top], per_seed[second])
    if noise is None:
        return "The seed-to-seed noise could not be measured (fewer than two seeds each)."
    gap = rows[top]["test_accuracy"] - rows[second]["test_accuracy"]
    verdict = "larger than" if gap > 2 * noise else "within"
    return (
        f"Over {len(seeds)} seeds the {100 * gap:.1f}-point difference of {top} and {second} "
        f"is {verdict} the seed-to-seed noise (twice the standard error of the difference, "
        f"{200 * noise:.1f} points)."
    )


def _size_line(rows: Mapping[str, Mapping[str, Any]], reference: str) -> str:
    deployed = all("deployed_bytes" in n for n in rows.values())
    key = "deployed_bytes" if deployed else "nonzeros"
    smallest = min(rows, key=lambda label: rows[label][key])
    if deployed:
        text = f"- **Size: {smallest}** ({_kib(rows[smallest][key])} deployed file"
    else:
        text = f"- **Size: {smallest}** ({rows[smallest][key]:,} non-zero weights, trained model"
    if reference in rows and smallest != reference:
        text += f", {rows[smallest][key] / rows[reference][key]:.3f}x the dense model's"
    others = [label for label in rows if label not in (smallest, reference)]
    for other in others:
        text += f"; {other} {rows[other][key] / rows[smallest][key]:.2f}x that"
    if not deployed:
        text += "; not deployed, so no file sizes"
    return text + ")."


def _latency_lines(
    rows: Mapping[str, Mapping[str, Any]], timing: Mapping[str, Any] | None, reference: str
) -> list[str]:
    from n2nonnx.pipeline.targets import ratio_text

    if timing is None:
        return ["- **Latency:** not measured (not deployed)."]
    noise = timing["noise"]
    parts = []
    for key, entry in timing["fastest"].items():
        best = entry["label"]
        ratio = rows[best].get("latency_ratio", {}).get(key)
        if entry["within_noise"]:
            text = (
                f"at batch {key} no model is faster than the others beyond the timing noise "
                f"(±{noise:.0%}): {best} and {', '.join(entry['within_noise'])}"
            )
        else:
            text = f"at batch {key} **{best}** is fastest"
            if ratio is not None and best != reference:
                text += f" ({_vs_dense(ratio_text(ratio))})"
        slower = [
            f"{label} {_vs_dense(ratio_text(rows[label]['latency_ratio'][key]))}"
            for label in rows
            if label not in (best, reference) and "latency_ratio" in rows[label]
        ]
        if slower:
            text += f", {', '.join(slower)}"
        parts.append(text)
    return [
        "- **Latency:** " + "; ".join(parts) + f". Ratios within ±{noise:.0%} of 1 are below "
        'the timing noise and read "same as dense".'
    ]


def _vs_dense(text: str) -> str:
    return text if text == "same as dense" else f"{text} dense"


def _kib(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 2**20 else f"{count / 2**20:.2f} MiB"
