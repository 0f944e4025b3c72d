"""torch -> ONNX with the settings n2nonnx trains best: BatchNorm kept, batch dimension symbolic.

``converters.pytorch`` (the user-facing bridge, which also checks the export against the
module in onnxruntime) and the built-in models (:mod:`n2nonnx.zoo`) both export through
:func:`to_onnx`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from n2nonnx.errors import InvalidArgumentError


def to_onnx(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    keep_batchnorm: bool = True,
    dynamo: bool = False,
) -> onnx.ModelProto:
    """Export ``module`` (already in the mode wanted, usually eval) to an in-memory model.

    Args:
        module: the model.
        inputs: example inputs.
        input_names: graph input names, one per input.
        output_names: graph output names, one per output.
        opset: default-domain opset (None: the exporter's default).
        dynamic_batch: make dimension 0 of every input and output symbolic (``batch``).
        keep_batchnorm: keep BatchNormalization nodes (no constant folding into convs), so
            that BatchNorm keeps training in n2nonnx.
        dynamo: use torch's dynamo-based exporter instead of the TorchScript one (it folds
            BatchNorm and may fix the batch size).

    Returns:
        The exported ModelProto.
    """
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        raise InvalidArgumentError(
            'the dynamo exporter needs onnxscript: pip install -e ".[dynamo]" '
            "(or export without dynamo)"
        )
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = Path(folder) / "model.onnx"
        if dynamo:
            shapes = [{0: torch.export.Dim.DYNAMIC} for _ in inputs] if dynamic_batch else None
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(
                    module,
                    inputs,
                    str(target),
                    dynamo=True,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_shapes=tuple(shapes) if shapes else None,
                    external_data=False,
                )
        else:
            axes = (
                {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
            )
            torch.onnx.export(
                module,
                inputs,
                str(target),
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=not keep_batchnorm,
            )
        return onnx.load(str(target))
