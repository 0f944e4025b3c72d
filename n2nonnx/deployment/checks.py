"""What :func:`~n2nonnx.deployment.deploy` checks before any work: its options and the input model.

Bad options (a negative tolerance, an agreement above 1, an execution provider this
onnxruntime build lacks) and models deployment cannot handle (an empty weight, a model
onnxruntime does not load, ``--quantize`` of a model that is already quantized or not
float32) are refused with one message naming the fix. The input model is run once on the
verification inputs: non-finite outputs leave nothing to verify against (a failure of the
work), and outputs that do not depend on the input make the verification trivial (a note).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from n2nonnx.errors import (
    InvalidArgumentError,
    InvalidModelError,
    UnsupportedOpError,
    VerificationError,
)
from n2nonnx.model import Model

#: ops of a model that is already quantized (QDQ, QOperator, integer or 4-bit MatMul)
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "MatMulInteger",
        "ConvInteger",
        "MatMulNBits",
        "DynamicQuantizeMatMul",
    }
)


def check_options(
    *,
    samples: Any,
    rtol: Any,
    min_agreement: Any,
    providers: Sequence[str] | None,
) -> None:
    """Refuse verification options out of range, before any work.

    Args:
        samples: inputs compared (an int >= 1).
        rtol: None or a finite number >= 0.
        min_agreement: None or a number in [0, 1].
        providers: None, or execution providers this onnxruntime build has (at least one).

    Raises:
        InvalidArgumentError: the first option out of range, with the allowed values.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InvalidArgumentError(f"samples must be an integer >= 1, got {samples!r}")
    if rtol is not None and not (_real(rtol) and math.isfinite(rtol) and rtol >= 0):
        raise InvalidArgumentError(
            f"--rtol {rtol} is not a finite number >= 0; pass a relative tolerance such as 1e-4 "
            "(or leave it out for the mode's default)"
        )
    if min_agreement is not None and not (_real(min_agreement) and 0 <= min_agreement <= 1):
        raise InvalidArgumentError(
            f"--min-agreement {min_agreement} is not in [0, 1]; pass the least top-1 agreement "
            "as a fraction, e.g. 0.95 (or leave it out for the mode's default)"
        )
    if providers is not None:
        from n2nonnx.runtime import available_providers

        available = available_providers()
        unknown = [name for name in providers if name not in available]
        if unknown or not providers:
            what = (
                f"--providers {', '.join(map(repr, unknown))}: not available in this onnxruntime build"
                if unknown
                else "--providers names no execution provider"
            )
            raise InvalidArgumentError(
                f"{what}; available: {', '.join(available)} (leave --providers out for the "
                "runtime's choice)"
            )


def check_model(model: Model, quantize: str | None) -> None:
    """Refuse a model deployment cannot handle, from its graph alone.

    Args:
        model: the input model.
        quantize: None, ``int8`` or ``int4``.

    Raises:
        InvalidModelError: a prunable layer with an empty weight.
        InvalidArgumentError: ``quantize`` of a model that is already quantized, or whose
            data input or weights are not float32.
    """
    for layer in model.layers:
        if 0 in tuple(layer.weight_shape):
            raise InvalidModelError(
                f"layer {layer.name!r} has an empty weight of shape {tuple(layer.weight_shape)}; "
                "deployment removes units of layers that have units and inputs: remove the layer "
                "or fix the export"
            )
    if quantize is None:
        return
    proto = model.proto
    quantized = sorted({node.op_type for node in proto.graph.node} & QUANTIZED_OPS)
    if quantized:
        raise InvalidArgumentError(
            f"--quantize {quantize}: the model is already quantized (it has {', '.join(quantized)}); "
            f"deploy the float32 model with --quantize {quantize}, or this one without --quantize"
        )
    initializers = {init.name: init for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    for value in inputs[:1]:
        elem_type = value.type.tensor_type.elem_type
        if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.UNDEFINED):
            raise InvalidArgumentError(
                f"--quantize {quantize} calibrates a float32 model, but input {value.name!r} is "
                f"{onnx.TensorProto.DataType.Name(elem_type)}; deploy it without --quantize or "
                "export the model in float32"
            )
    for layer in model.layers:
        weight = initializers.get(layer.weight)
        if weight is not None and weight.data_type != onnx.TensorProto.FLOAT:
            raise InvalidArgumentError(
                f"--quantize {quantize} quantizes float32 weights, but {layer.weight!r} of layer "
                f"{layer.name!r} is {onnx.TensorProto.DataType.Name(weight.data_type)}; deploy it "
                "without --quantize or export the model in float32"
            )


def check_opens(model: Model) -> None:
    """Refuse, before any long work, a model onnxruntime does not open (a future opset ...).

    The verbs that write a model (``train``) save only what onnxruntime opens; a model it
    does not open as input is refused here rather than after the training.

    Raises:
        InvalidModelError: onnxruntime does not load the model (with the reason and the fix).
        UnsupportedOpError: onnxruntime has no kernel for one of its nodes.
    """
    from n2nonnx.io import is_large
    from n2nonnx.runtime import make_session

    source = getattr(model, "source", None)
    large = is_large(model.proto)  # over protobuf's 2 GB: onnxruntime reads the file
    if large and source is None:
        return
    try:
        make_session(str(source) if large else model.proto, optimization="none")
    except Exception as error:  # noqa: BLE001 (onnxruntime's own exception classes)
        raise _load_error(model.proto, error) from None


def check_runs(
    model: Model, feeds: Mapping[str, np.ndarray], providers: Sequence[str] | None
) -> list[str]:
    """Open the input model in onnxruntime and run it once on the verification inputs.

    Args:
        model: the input model.
        feeds: the verification inputs.
        providers: the verification's execution providers.

    Returns:
        Notes for the report (outputs that do not depend on the input).

    Raises:
        InvalidModelError: onnxruntime does not load or run the model (with the reason).
        UnsupportedOpError: onnxruntime has no kernel for one of its nodes.
        VerificationError: its outputs hold NaN or infinite values.
    """
    from n2nonnx.runtime import make_session, run_in_batches

    try:
        session = make_session(model.proto, providers, optimization="basic")
    except Exception as error:  # noqa: BLE001 (onnxruntime's own exception classes)
        raise _load_error(model.proto, error) from None
    try:
        outputs = run_in_batches(session, feeds, 256)
    except Exception as error:  # noqa: BLE001
        raise InvalidModelError(
            f"onnxruntime cannot run the input model on the verification inputs: "
            f"{_reason(error)}; fix the export (or pass --data that fits its input)"
        ) from None
    count = len(outputs[0]) if outputs and np.ndim(outputs[0]) else 1
    bad = np.zeros(count, bool)
    for output in outputs:
        array = np.asarray(output)
        if array.dtype.kind in "fc" and array.ndim and len(array) == count:
            bad |= ~np.isfinite(array.reshape(count, -1)).all(axis=1)
        elif array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad[:] = True
    if bad.any():
        raise VerificationError(
            f"the input model's outputs hold NaN or infinite values on {int(bad.sum())} of {count} "
            "verification inputs, so there is nothing to verify the deployed model against; "
            "nothing was written. Fix the model (its weights, or the data's scale) first"
        )
    constant = count > 1 and all(
        np.ndim(output) and len(output) == count and (np.asarray(output) == output[:1]).all()
        for output in outputs
    )
    if not constant:
        return []
    return [
        f"note               the input model's outputs do not depend on its input (the same on all "
        f"{count} verification inputs): the verification only shows that the deployed model "
        "gives the same constant"
    ]


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reason(error: BaseException) -> str:
    """The message of an onnxruntime error without its status prefix and C++ source location."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^/\S+:\d+ .*?\) ", "", text)  # "/onnxruntime_src/...h:46 void f(...) "
    return text.rstrip(". ")


def _load_error(proto: onnx.ModelProto, error: BaseException) -> Exception:
    import onnxruntime

    reason = _reason(error)
    version = f"onnxruntime {onnxruntime.__version__}"
    opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    if "opset" in reason.lower() and "ai.onnx" in opsets:
        supported = re.search(r"till opset (\d+)", reason)
        upto = f" (it supports up to opset {supported.group(1)})" if supported else ""
        return InvalidModelError(
            f"{version} does not load the model's ai.onnx opset {opsets['ai.onnx']}{upto}; export "
            "it at a released opset (e.g. torch.onnx.export(..., opset_version=17)) or upgrade "
            "onnxruntime"
        )
    if "same node name" in reason:
        return InvalidModelError(
            f"{version} does not load the model: {reason}; give every node a unique name "
            "(re-export it, or rename the nodes with onnx)"
        )
    if "Could not find an implementation" in reason:
        return UnsupportedOpError(
            f"{version} has no kernel for a node of the model: {reason}; export the model in "
            "float32 (or with ops onnxruntime implements for its element types)"
        )
    return InvalidModelError(
        f"{version} does not load the model: {reason}; fix the export (onnx.checker.check_model "
        "names most problems)"
    )
