"""Quantization for deployment: static int8 (QDQ) calibrated on the user's data, 4-bit MatMul weights.

``int8``: weights int8 per output channel, activations uint8 (stock onnxruntime fuses
``DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear`` into QLinearConv / QGemm
kernels with uint8 activations; with int8 activations it leaves convs unfused, slower than
fp32), calibrated by min/max over a few batches. Layers can be kept in fp32: by name
(``keep_fp32``) and, with ``fallback``, where the whole model measures faster with the
layer in fp32 (each layer tried, largest first). Naming a layer in ``nodes_to_exclude``
of onnxruntime's quantizer is not enough: its input still arrives through
``QuantizeLinear -> DequantizeLinear``, and onnxruntime's optimizer re-quantizes the fp32
weight per tensor and fuses the layer anyway. So a kept layer reads the fp32 tensor
before that pair, and :func:`runtime_precision` checks, on the optimised model
onnxruntime writes, that it really runs in fp32.

``int4``: the weights of MatMul and Gemm layers (Gemm rewritten as MatMul + Add) as
4-bit blocks of :data:`INT4_BLOCK` (symmetric, so zeros stay exactly zero) in
onnxruntime's ``com.microsoft.MatMulNBits`` with ``accuracy_level`` 4 (activations
quantized to int8 per block inside the kernel); convolutions stay fp32. No calibration
data needed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError, WorkFailedError

log = logging.getLogger(__name__)

QUANTIZATION_MODES = ("int8", "int4")
INT4_BLOCK = 32
# MatMulNBits accuracy_level 4: the kernel quantizes activations to int8 per block and runs
# integer dot products (measured here: 0.27x of dense fp32 for a 5% MLP at batch 1, against
# 0.77x with fp32 compute, level 0), for about 5% more output error.
INT4_ACCURACY_LEVEL = 4
INT4_MIN_ORT = (1, 18)  # MatMulNBits on CPU and onnxruntime.quantization's MatMulNBitsQuantizer
# Layer ops as they appear in onnxruntime's optimised model, in fp32 and fused to integers.
FP32_LAYER_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})
INT_LAYER_OPS = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
    }
)
# Single-data-input ops onnxruntime may move a DequantizeLinear forward through.
_PASS_THROUGH = frozenset(
    {
        "MaxPool",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Slice",
        "Gather",
        "Resize",
        "Pad",
        "Identity",
        "Expand",
        "Split",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
_LAYOUT_OPS = frozenset({"ReorderOutput", "ReorderInput", "Transpose"})
_ACTIVATIONS = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Add"}
)


@dataclass
class QuantizationReport:
    """What quantization did.

    Attributes:
        mode: ``int8`` or ``int4``.
        calibration_samples: inputs used to calibrate (int8).
        layers: layer nodes quantized.
        fallback: layer nodes kept in fp32 because int8 measured slower there.
        kept_fp32: layer nodes kept in fp32 because the caller named them.
        runtime_fp32: for every layer kept in fp32, the op onnxruntime's optimised model
            runs it with (checked: an fp32 Conv / Gemm / MatMul, not an integer kernel).
        activations / weights: how activations and weights are stored.
        latency_fp32 / latency_int8: median seconds per call of the whole model at the
            calibration batch size, before and after (final choice; int8 only).
        trials: per tried layer, the latency with it in fp32.
    """

    mode: str = "int8"
    calibration_samples: int = 0
    layers: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    runtime_fp32: dict[str, str] = field(default_factory=dict)
    activations: str = "uint8 per tensor"
    weights: str = "int8 per output channel"
    latency_fp32: float | None = None
    latency_int8: float | None = None
    trials: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report as plain JSON-ready values (for the provenance record)."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a report."""
        if self.mode == "int4":
            return (
                f"{len(self.layers)} MatMul/Gemm layers with 4-bit weights (MatMulNBits, "
                f"blocks of {INT4_BLOCK}), {len(self.kept_fp32)} kept fp32; other layers fp32"
            )
        kept = len(self.fallback) + len(self.kept_fp32)
        line = f"{len(self.layers)} layers int8, {kept} kept fp32"
        if self.kept_fp32 or self.fallback:
            line += " (fp32 in onnxruntime's optimised model: checked)"
        if self.latency_fp32 is not None and self.latency_int8 is not None:
            line += (
                f"; latency {self.latency_fp32 * 1e3:.3g} ms -> {self.latency_int8 * 1e3:.3g} ms "
                "(calibration batch)"
            )
        return line


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
    keep_fp32: Sequence[str] = (),
    max_trials: int = 8,
    threads: int = 1,
    batch_size: int = 32,
) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Quantize ``proto`` to static QDQ int8 with uint8 activations.

    Args:
        proto: an fp32 model (masks folded).
        layer_nodes: names of its Conv / Gemm / MatMul layer nodes (fallback candidates,
            largest first).
        calibration: calibration inputs, batch first, in the input's dtype.
        input_name: the model's data input.
        fallback: try each layer in fp32 and keep it there where the model measures faster.
        keep_fp32: layer nodes to keep in fp32 whatever they measure.
        max_trials: at most this many layers tried.
        threads: onnxruntime threads for the latency measurements.
        batch_size: calibration and measurement batch size.

    Returns:
        The quantized model and a report.

    Raises:
        InvalidArgumentError: ``keep_fp32`` names a node that is not a layer.
        WorkFailedError: onnxruntime still runs a layer kept in fp32 as an integer kernel.
    """
    from n2nonnx.deployment.timing import interleaved_medians
    from n2nonnx.runtime import make_session

    unknown = sorted(set(keep_fp32) - set(layer_nodes))
    if unknown:
        raise InvalidArgumentError(
            f"--keep-fp32 names {unknown}, not Conv / Gemm / MatMul layers of the deployed "
            f"model; its layers are {list(layer_nodes)[:12]}"
        )
    report = QuantizationReport(calibration_samples=len(calibration))
    feed = {input_name: calibration[:batch_size]}

    def build(exclude: list[str]) -> onnx.ModelProto:
        return _quantize(proto, calibration, input_name, batch_size, exclude)

    excluded = list(keep_fp32)
    best = build(excluded)

    def session(model: onnx.ModelProto):
        return make_session(model, ["CPUExecutionProvider"], threads=threads)

    fp32_time, best_time = interleaved_medians(
        [session(proto), session(best)], feed, rounds=5, calls=5
    )
    report.latency_fp32 = fp32_time
    if fallback:
        for node in [n for n in layer_nodes if n not in excluded][:max_trials]:
            candidate = build([*excluded, node])
            previous, trial_time = interleaved_medians(
                [session(best), session(candidate)], feed, rounds=5, calls=5
            )
            report.trials[node] = trial_time
            if trial_time < 0.97 * previous:
                log.info(
                    "int8: %s stays fp32 (%.3g ms vs %.3g ms)",
                    node,
                    trial_time * 1e3,
                    previous * 1e3,
                )
                excluded.append(node)
                best, best_time = candidate, trial_time
            else:
                best_time = previous
    report.latency_int8 = best_time
    report.kept_fp32 = list(keep_fp32)
    report.fallback = [n for n in excluded if n not in keep_fp32]
    report.layers = [n for n in layer_nodes if n not in excluded]
    if excluded:
        runtime = runtime_precision(best, excluded)
        wrong = [name for name, op in runtime.items() if op is None or op not in FP32_LAYER_OPS]
        if wrong:
            raise WorkFailedError(
                f"onnxruntime runs {wrong} as integer kernels although they were kept in fp32; "
                "deploy without --keep-fp32 / with --no-fallback"
            )
        report.runtime_fp32 = {name: str(op) for name, op in runtime.items()}
    return best, report


def _quantize(proto, calibration, input_name, batch_size, exclude) -> onnx.ModelProto:
    """Pre-process (fuse BatchNorm into convs, infer shapes), quantize through files, keep ``exclude`` fp32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet(), tempfile.TemporaryDirectory(prefix="n2nonnx-int8-") as folder:
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
        quantized = onnx.load(str(target))
    return keep_fp32_inputs(quantized, exclude)


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization warns on the root logger: silence it meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def keep_fp32_inputs(proto: onnx.ModelProto, nodes: Sequence[str]) -> onnx.ModelProto:
    """Make ``nodes`` read fp32 tensors that onnxruntime cannot fuse into integer kernels.

    A layer excluded from quantization still reads ``QuantizeLinear -> DequantizeLinear``
    (possibly through MaxPool, Reshape ...); onnxruntime moves the ``DequantizeLinear``
    forward to the layer, quantizes its fp32 weight per tensor and fuses it anyway. So
    each such input of a named node is rebuilt from the quantized tensor with plain ops,
    ``Cast -> Sub(zero point) -> Mul(scale)`` (the same values, exactly), and the
    pass-through ops in between are copied to run on it in fp32; the quantized producer
    keeps its ``QuantizeLinear`` and stays fused. Nodes left without consumers go.

    Args:
        proto: a QDQ model in which ``nodes`` were excluded from quantization (modified).
        nodes: node names.

    Returns:
        ``proto``.
    """
    graph = proto.graph
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {t.name: t for t in graph.initializer}
    rebuilt: dict[str, str] = {}

    def dequantized(node: onnx.NodeProto, added: list[onnx.NodeProto]) -> str | None:
        scale = initializers.get(node.input[1])
        if scale is None or len(scale.dims) > 0 and int(np.prod(scale.dims)) != 1:
            return None  # per-channel: not an activation
        base = f"{node.output[0]}/fp32"
        terms = [f"{base}/cast"]
        added.append(
            helper.make_node(
                "Cast", [node.input[0]], terms, name=f"{base}/cast", to=onnx.TensorProto.FLOAT
            )
        )
        if len(node.input) > 2 and node.input[2] in initializers:
            zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(zero, f"{base}/zero_point"))
            added.append(
                helper.make_node(
                    "Sub",
                    [terms[-1], f"{base}/zero_point"],
                    [f"{base}/centred"],
                    name=f"{base}/sub",
                )
            )
            terms.append(f"{base}/centred")
        added.append(helper.make_node("Mul", [terms[-1], node.input[1]], [base], name=base))
        return base

    def fp32_source(tensor: str, added: list[onnx.NodeProto]) -> str:
        if tensor in rebuilt:
            return rebuilt[tensor]
        node = producer.get(tensor)
        source = tensor
        if node is not None and node.op_type == "DequantizeLinear":
            before = producer.get(node.input[0])
            if before is not None and before.op_type == "QuantizeLinear":
                source = dequantized(node, added) or tensor
        elif node is not None and node.op_type in _PASS_THROUGH and len(node.output) == 1:
            upstream = fp32_source(node.input[0], added)
            if upstream != node.input[0]:
                clone = onnx.NodeProto()
                clone.CopyFrom(node)
                clone.name = f"{node.name}/fp32"
                clone.input[0] = upstream
                clone.output[0] = source = f"{tensor}/fp32"
                added.append(clone)
        rebuilt[tensor] = source
        return source

    wanted = set(nodes)
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name in wanted:
            added: list[onnx.NodeProto] = []
            for position, name in enumerate(node.input):
                if name and name not in initializers:
                    node.input[position] = fp32_source(name, added)
            ordered += added
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    _remove_dead(graph)
    return proto


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is used, and initializers nothing reads."""
    outputs = {value.name for value in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def runtime_precision(proto: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, str | None]:
    """How onnxruntime's optimised model (level ``all``, CPU) runs each of ``nodes``.

    Each node's output (or the output of the activation fused into it) is traced in the
    model onnxruntime writes with ``SessionOptions.optimized_model_filepath``, back
    through layout nodes (NCHWc reorders, transposes), to the op computing it.

    Args:
        proto: the model.
        nodes: names of its Conv / Gemm / MatMul nodes.

    Returns:
        Node name -> the op type computing it in the optimised model (``Conv``,
        ``FusedConv``, ``QLinearConv`` ...), or None where its output was fused away into
        an integer kernel.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="n2nonnx-precision-") as folder:
        path = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(
            proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        optimized = onnx.load(str(path), load_external_data=False)
    produced = {output: node for node in optimized.graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    result: dict[str, str | None] = {}
    for node in proto.graph.node:
        if node.name not in nodes:
            continue
        candidates, tensor = [node.output[0]], node.output[0]
        while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in _ACTIVATIONS:
            tensor = consumers[tensor][0].output[0]
            candidates.append(tensor)
        result[node.name] = None
        for name in candidates:
            found = produced.get(name)
            while found is not None and found.op_type in _LAYOUT_OPS:
                found = produced.get(found.input[0])
            if found is not None and found.op_type in FP32_LAYER_OPS | INT_LAYER_OPS:
                result[node.name] = found.op_type
                break
    return result


def check_int4_support(proto: onnx.ModelProto) -> None:
    """Refuse ``int4`` where the installed onnxruntime or the model's opsets cannot run it.

    Raises:
        UnsupportedOpError: onnxruntime older than :data:`INT4_MIN_ORT` or without its
            MatMulNBits quantizer, or a model importing ``com.microsoft`` at a version
            other than 1, or with a default-domain opset below 10.
    """
    import onnxruntime as ort

    version = tuple(int(part) for part in ort.__version__.split(".")[:2] if part.isdigit())
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # noqa: F401
    except ImportError:
        version = (0, 0)
    if version < INT4_MIN_ORT:
        raise UnsupportedOpError(
            f"--quantize int4 needs onnxruntime >= {'.'.join(map(str, INT4_MIN_ORT))} with "
            f"onnxruntime.quantization.matmul_nbits_quantizer (MatMulNBits); this is "
            f"onnxruntime {ort.__version__}: upgrade onnxruntime or use --quantize int8"
        )
    opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    if opsets.get("com.microsoft", 1) != 1:
        raise UnsupportedOpError(
            f"--quantize int4 adds com.microsoft ops at version 1; the model imports "
            f"com.microsoft version {opsets['com.microsoft']}"
        )
    if opsets.get("ai.onnx", 0) < 10:
        raise UnsupportedOpError(
            f"--quantize int4 needs a default-domain opset of at least 10, the model has "
            f"{opsets.get('ai.onnx', 0)}: update it with onnx.version_converter first"
        )


def quantize_int4(
    proto: onnx.ModelProto, layer_nodes: Sequence[str], *, keep_fp32: Sequence[str] = ()
) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Store MatMul / Gemm weights as 4-bit blocks in ``com.microsoft.MatMulNBits``.

    Args:
        proto: an fp32 model (masks folded; not modified).
        layer_nodes: names of its layer nodes.
        keep_fp32: layer nodes to leave in fp32.

    Returns:
        The quantized model and a report.

    Raises:
        UnsupportedOpError: see :func:`check_int4_support`.
        InvalidArgumentError: ``keep_fp32`` names a node that is not a layer.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    check_int4_support(proto)
    unknown = sorted(set(keep_fp32) - set(layer_nodes))
    if unknown:
        raise InvalidArgumentError(
            f"--keep-fp32 names {unknown}, not layers of the deployed model; its layers are "
            f"{list(layer_nodes)[:12]}"
        )
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _gemm_to_matmul(model, exclude=set(keep_fp32))
    before = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    with _quiet():
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=INT4_BLOCK,
            is_symmetric=True,
            accuracy_level=INT4_ACCURACY_LEVEL,
            nodes_to_exclude=list(keep_fp32),
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
    result = quantizer.model.model
    remaining = {n.name for n in result.graph.node if n.op_type == "MatMul"}
    quantized = sorted(before - remaining)
    report = QuantizationReport(
        mode="int4",
        layers=[n for n in layer_nodes if n in quantized],
        kept_fp32=list(keep_fp32),
        activations="int8 per block inside MatMulNBits (accuracy_level 4)",
        weights=f"int4 blocks of {INT4_BLOCK} along the input axis, symmetric (MatMulNBits)",
    )
    return result, report


def _gemm_to_matmul(proto: onnx.ModelProto, exclude: set[str]) -> None:
    """Rewrite ``Gemm(A, B, C)`` with a constant 2-D ``B`` and no ``transA`` as ``MatMul`` (+ ``Add``).

    The MatMul keeps the Gemm's name (so the 4-bit quantizer and reports see it); the
    weight becomes ``alpha * B`` (transposed where ``transB``), the bias ``beta * C``.
    A Gemm whose computed bias is scaled by ``beta`` stays.
    """
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    listed = {value.name for value in graph.input}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = initializers.get(node.input[1]) if node.op_type == "Gemm" else None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        beta = float(attributes.get("beta", 1.0))
        if (
            weight is None
            or node.name in exclude
            or attributes.get("transA", 0)
            or len(weight.dims) != 2
            or (bias is not None and beta != 1.0 and bias not in initializers)
        ):
            nodes.append(node)
            continue
        array = numpy_helper.to_array(weight)
        array = (array.T if attributes.get("transB", 0) else array) * float(
            attributes.get("alpha", 1.0)
        )
        name = node.input[1]
        if uses[name] > 1 or name in listed:
            name = f"{name}/matmul"
        else:
            graph.initializer.remove(weight)
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        product = f"{node.output[0]}/matmul" if bias is not None else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name))
        if bias is None:
            continue
        if beta != 1.0:
            scaled = numpy_helper.to_array(initializers[bias]) * beta
            bias = f"{bias}/beta"
            graph.initializer.append(numpy_helper.from_array(scaled, bias))
        nodes.append(
            helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}/bias")
        )
    del graph.node[:]
    graph.node.extend(nodes)
