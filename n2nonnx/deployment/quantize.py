"""Static int8 quantization (QDQ) with onnxruntime.quantization, calibrated on the user's data.

Weights are int8 per output channel, activations uint8, calibrated by min/max over a few
batches. onnxruntime fuses ``DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear``
into integer kernels (QLinearConv, QGemm ...). Where int8 does not pay, it falls back:
each layer is tried in fp32 (largest first) and kept in fp32 when the whole model then
measures faster.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger(__name__)

QUANTIZATION_MODES = ("int8",)


@dataclass
class QuantizationReport:
    """What quantization did.

    Attributes:
        mode: ``int8``.
        calibration_samples: inputs used to calibrate.
        layers: layer nodes in int8.
        fallback: layer nodes kept in fp32 because int8 measured slower there.
        latency_fp32 / latency_int8: median seconds per call of the whole model at the
            calibration batch size, before and after (final choice).
        trials: per tried layer, the latency with it in fp32.
    """

    mode: str = "int8"
    calibration_samples: int = 0
    layers: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    latency_fp32: float | None = None
    latency_int8: float | None = None
    trials: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report as plain JSON-ready values (for the provenance record)."""
        return asdict(self)


class _Reader:
    """A CalibrationDataReader over one array, in batches."""

    def __init__(self, name: str, data: np.ndarray, batch_size: int) -> None:
        self.batches = iter(
            [{name: data[i : i + batch_size]} for i in range(0, len(data), batch_size)]
        )

    def get_next(self):
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by static MinMax calibration
        pass


def quantize_int8(
    proto: onnx.ModelProto,
    layer_nodes: Sequence[str],
    calibration: np.ndarray,
    *,
    input_name: str,
    fallback: bool = True,
    max_trials: int = 8,
    threads: int = 1,
    batch_size: int = 32,
) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Quantize ``proto`` to static QDQ int8.

    Args:
        proto: an fp32 model (masks folded).
        layer_nodes: names of its Conv / Gemm / MatMul layer nodes (fallback candidates,
            largest first).
        calibration: calibration inputs, batch first, in the input's dtype.
        input_name: the model's data input.
        fallback: try each layer in fp32 and keep it there where the model measures faster.
        max_trials: at most this many layers tried.
        threads: onnxruntime threads for the latency measurements.
        batch_size: calibration and measurement batch size.

    Returns:
        The quantized model and a report.
    """
    from n2nonnx.deployment.timing import interleaved_medians
    from n2nonnx.runtime import make_session

    report = QuantizationReport(calibration_samples=len(calibration))
    feed = {input_name: calibration[:batch_size]}

    def build(exclude: list[str]) -> onnx.ModelProto:
        return _quantize(proto, calibration, input_name, batch_size, exclude)

    best = build([])
    sessions = [
        make_session(proto, ["CPUExecutionProvider"], threads=threads),
        make_session(best, ["CPUExecutionProvider"], threads=threads),
    ]
    fp32_time, best_time = interleaved_medians(sessions, feed, rounds=5, calls=5)
    report.latency_fp32 = fp32_time
    excluded: list[str] = []
    if fallback:
        for node in list(layer_nodes)[:max_trials]:
            candidate = build([*excluded, node])
            session = make_session(candidate, ["CPUExecutionProvider"], threads=threads)
            best_session = make_session(best, ["CPUExecutionProvider"], threads=threads)
            best_time, trial_time = interleaved_medians(
                [best_session, session], feed, rounds=5, calls=5
            )
            report.trials[node] = trial_time
            if trial_time < 0.97 * best_time:
                excluded.append(node)
                best, best_time = candidate, trial_time
                log.info(
                    "int8: %s stays fp32 (%.3g ms vs %.3g ms)",
                    node,
                    trial_time * 1e3,
                    best_time * 1e3,
                )
    report.latency_int8 = best_time
    report.fallback = excluded
    report.layers = [n for n in layer_nodes if n not in excluded]
    return best, report


def _quantize(proto, calibration, input_name, batch_size, exclude) -> onnx.ModelProto:
    """Pre-process (fuse BatchNorm into convs, infer shapes), then quantize, through files."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization warns on the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="n2nonnx-int8-") as folder:
            source, prepared, target = (
                Path(folder) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx")
            )
            source.write_bytes(proto.SerializeToString())
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                _Reader(input_name, calibration, batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=list(exclude),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            return onnx.load(str(target))
    finally:
        root.setLevel(level)
