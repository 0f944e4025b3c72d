"""The PyTorch bridge: export an ``nn.Module`` to ONNX and check it in onnxruntime.

Command line::

    python -m converters.pytorch n2nonnx.zoo:mlp --input-shape 1x40 -o mlp.onnx

The export keeps BatchNormalization and Dropout as their own nodes (no folding into the
preceding conv), because n2nonnx trains the exported graph: BatchNorm must keep learning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from converters._common import (
    ExportReport,
    finish,
    load_factory,
    output_arguments,
    parse_shape,
    run_cli,
)
from n2nonnx.torch_export import to_onnx

__all__ = ["ExportReport", "export", "main"]


def export(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    keep_batchnorm: bool = True,
    dynamo: bool = False,
) -> ExportReport:
    """Export ``module`` (in eval mode) to ONNX and compare it with onnxruntime.

    Args:
        module: the model. It is put in eval mode for the export and restored after.
        example_inputs: one tensor or a sequence of tensors.
        path: where to write the ``.onnx`` file (None: keep it in memory).
        input_names: graph input names (default ``x``, or ``x0``, ``x1`` ... for several).
        output_names: graph output names (default ``y``, or ``y0``, ``y1`` ... for several).
        opset: default-domain opset (None: the exporter's default).
        dynamic_batch: make dimension 0 of every input and output symbolic (``batch``).
        keep_batchnorm: keep BatchNormalization nodes instead of folding them into convs.
        dynamo: use torch's dynamo-based exporter instead of the TorchScript one.

    Returns:
        An :class:`ExportReport`.
    """
    inputs = (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    )
    input_names = list(
        input_names or (["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))])
    )
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(*inputs)
        expected = (expected,) if isinstance(expected, torch.Tensor) else tuple(expected)
        output_names = list(
            output_names
            or (["y"] if len(expected) == 1 else [f"y{i}" for i in range(len(expected))])
        )
        proto = to_onnx(
            module,
            inputs,
            input_names,
            output_names,
            opset=opset,
            dynamic_batch=dynamic_batch,
            keep_batchnorm=keep_batchnorm,
            dynamo=dynamo,
        )
    finally:
        module.train(was_training)
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs, strict=True)}
    return finish(proto, feeds, [e.detach().cpu().numpy() for e in expected], path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters.pytorch MODULE:CALLABLE --input-shape 1x40 -o out.onnx``."""
    parser = argparse.ArgumentParser(
        prog="python -m converters.pytorch",
        description="Export a PyTorch module (built by MODULE:CALLABLE) to ONNX and check it in onnxruntime.",
    )
    parser.add_argument(
        "factory", help="MODULE:CALLABLE returning an nn.Module, e.g. n2nonnx.zoo:mlp"
    )
    parser.add_argument(
        "--input-shape",
        required=True,
        action="append",
        help="example input shape, e.g. 1x3x32x32 (repeat for several inputs)",
    )
    output_arguments(parser)
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the weights and example inputs"
    )
    parser.add_argument("--fold-batchnorm", action="store_true", help="fold BatchNorm into convs")
    parser.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter")
    args = parser.parse_args(argv)

    def export_model() -> ExportReport:
        torch.manual_seed(args.seed)
        module = load_factory(args.factory, example="n2nonnx.zoo:mlp")()
        inputs = [torch.randn(*parse_shape(s)) for s in args.input_shape]
        return export(
            module,
            inputs,
            args.output,
            opset=args.opset,
            keep_batchnorm=not args.fold_batchnorm,
            dynamo=args.dynamo,
        )

    return run_cli("torch", export_model, args)


if __name__ == "__main__":
    sys.exit(main())
