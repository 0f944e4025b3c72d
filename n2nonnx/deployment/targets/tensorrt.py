"""The ``tensorrt`` target: ONNX with 2:4-sparse weights, and the TensorRT provider options.

TensorRT's sparse kernels (Ampere and later) need the 2:4 pattern: at most 2 non-zeros
in every 4 consecutive input channels, at each output unit and kernel position.
:func:`repair_2_4` makes a pruned weight follow it without changing its number of
non-zeros where that fits: in a group of 4 with more than 2, the largest 2 stay and the
others move to free slots of groups with fewer than 2 in the same row (same output unit
and kernel position), the nearest group first; a row with more non-zeros than its 2-in-4
capacity first loses its smallest ones (counted as ``dropped``). The repair runs after dead
units are removed (removing input channels shifts the groups of 4).

Moving a weight to another input channel changes what the model computes: the deployed
model is verified exactly against the repaired model, the repaired model's distance from
the input model is reported, and a trained model should be fine-tuned after the repair
(or pruned to 2:4 before training). The file is ONNX; TensorRT runs it through
onnxruntime's TensorRT execution provider with the provider options in the summary
(onnxruntime folds the compact storage before it hands the graph to TensorRT; for
``trtexec`` deploy with ``--storage dense``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from n2nonnx.deployment.targets.base import Package, Prepared, Target
from n2nonnx.model import Model

GROUP, KEEP = 4, 2


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_2_4` did to one weight.

    Attributes:
        nonzero: non-zeros before.
        moved: non-zeros moved to another input channel.
        dropped: non-zeros removed (their row had more than its 2-in-4 capacity).
    """

    nonzero: int
    moved: int
    dropped: int


def is_2_4(weight: np.ndarray, in_axis: int) -> bool:
    """Whether every 4 consecutive input channels hold at most 2 non-zeros, at every other index."""
    rows = _rows(weight, in_axis)
    return bool((_group_counts(rows) <= KEEP).all())


def _rows(weight: np.ndarray, in_axis: int) -> np.ndarray:
    """The weight as rows along the input axis, padded to a multiple of 4 with zeros."""
    moved = np.moveaxis(weight, in_axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    pad = -rows.shape[1] % GROUP
    return np.pad(rows, ((0, 0), (0, pad))) if pad else rows


def _group_counts(rows: np.ndarray) -> np.ndarray:
    return np.count_nonzero(rows.reshape(len(rows), -1, GROUP), axis=-1)


def repair_2_4(weight: np.ndarray, in_axis: int) -> tuple[np.ndarray, Repair]:
    """``weight`` with every group of 4 input channels holding at most 2 non-zeros.

    Args:
        weight: a layer weight (pruned: zeros are pruned entries).
        in_axis: its input-channel axis.

    Returns:
        The repaired weight (a new array) and what moved.
    """
    channels = weight.shape[in_axis]
    rows = _rows(weight, in_axis).copy()
    counts = _group_counts(rows)
    nonzero = int(np.count_nonzero(rows))
    moved = dropped = 0
    valid = np.arange(rows.shape[1]) < channels
    capacity = KEEP * (channels // GROUP) + min(KEEP, channels % GROUP)
    for row in np.flatnonzero((counts > KEEP).any(axis=1)):
        values = rows[row]
        cells = np.flatnonzero(values)
        if len(cells) > capacity:  # more than 2-in-4 can hold: the smallest go
            smallest = cells[np.argsort(np.abs(values[cells]), kind="stable")]
            values[smallest[: len(cells) - capacity]] = 0
            dropped += len(cells) - capacity
        groups = values.reshape(-1, GROUP)
        homeless: list[tuple[float, int]] = []  # (value, origin group)
        for group in np.flatnonzero(counts[row] > KEEP):
            cells = np.flatnonzero(groups[group])
            order = cells[np.argsort(-np.abs(groups[group][cells]), kind="stable")]
            for cell in order[KEEP:]:
                homeless.append((float(groups[group][cell]), int(group)))
                groups[group][cell] = 0
        homeless.sort(key=lambda item: -abs(item[0]))
        free = KEEP - np.count_nonzero(groups, axis=1)
        for value, origin in homeless:
            open_groups = np.flatnonzero(free > 0)
            placed = False
            for group in open_groups[np.argsort(np.abs(open_groups - origin), kind="stable")]:
                slots = [
                    int(group) * GROUP + cell
                    for cell in range(GROUP)
                    if groups[group][cell] == 0 and valid[int(group) * GROUP + cell]
                ]
                if slots:
                    values[slots[0]] = value
                    free[group] -= 1
                    moved += 1
                    placed = True
                    break
            if not placed:  # pragma: no cover - the row fits its capacity by now
                raise AssertionError("2:4 repair: no free slot in a row within capacity")
    moved_axis = np.moveaxis(weight, in_axis, -1)
    repaired = rows[:, :channels].reshape(moved_axis.shape)
    result = np.ascontiguousarray(np.moveaxis(repaired, -1, in_axis)).astype(weight.dtype)
    return result, Repair(nonzero, moved, dropped)


def provider_options(quantize: str | None) -> dict[str, object]:
    """TensorRT execution provider options for the deployed file."""
    return {
        "trt_sparsity_enable": True,
        "trt_fp16_enable": True,
        "trt_int8_enable": quantize == "int8",  # explicit Q/DQ scales, no calibration table
    }


class TensorRTTarget(Target):
    """TensorRT (through onnxruntime's TensorRT EP): 2:4-sparse weights in an ONNX file."""

    name = "tensorrt"
    suffix = ".onnx"
    quantize = (None, "int8")

    def prepare(
        self, model: Model, reference: onnx.ModelProto, feeds: Mapping[str, np.ndarray]
    ) -> Prepared:
        """Repair every Conv / Gemm / MatMul weight to 2:4; verify the step before it exactly."""
        from n2nonnx.deployment.verify import VerificationError, compare

        exact = compare(reference, model.proto, feeds, mode="fp32")
        if not exact.passed:
            raise VerificationError(
                f"dead-unit removal changed the model: {exact.describe()}; nothing was written"
            )
        values, repairs = {}, {}
        for layer in model.layers:
            weight = np.asarray(model.initializer(layer.weight))
            if weight.ndim < 2:
                continue
            repaired, record = repair_2_4(weight, layer.in_axis)
            if record.moved or record.dropped:
                values[layer.weight] = repaired
            repairs[layer.name] = asdict(record)
        repaired_model = model.with_initializers(values) if values else model
        change = compare(reference, repaired_model.proto, feeds, mode="fp32", rtol=None)
        moved = sum(r["moved"] for r in repairs.values())
        dropped = sum(r["dropped"] for r in repairs.values())
        info = {
            "sparsity_2_4": {"layers": repairs, "moved": moved, "dropped": dropped},
            "repair_change": {
                key: value
                for key, value in change.to_dict().items()
                if key not in ("rtol", "min_agreement", "passed")
            },
        }
        lines = [
            f"2:4 pattern        {len(repairs)} layers; {moved} weights moved, {dropped} dropped; "
            f"outputs moved by {change.relative:.3g} of the scale (verified against the "
            "repaired model)",
        ]
        return Prepared(repaired_model, repaired_model.proto, info, lines)

    def package(
        self,
        deployed: onnx.ModelProto,
        reference: onnx.ModelProto,
        feeds: Mapping[str, np.ndarray],
        *,
        mode: str,
        rtol: float | None,
        min_agreement: float | None,
        quantize: str | None,
    ) -> Package:
        """The ONNX file, with the provider options to run it with in the summary."""
        options = provider_options(quantize)
        shown = ", ".join(f"{key}={value}" for key, value in options.items())
        return Package(
            {"": deployed.SerializeToString()},
            None,
            {"provider_options": options, "execution_provider": "TensorrtExecutionProvider"},
            [f"tensorrt options   {shown}"],
        )
