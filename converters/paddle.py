"""The PaddlePaddle bridge: save a ``paddle.nn.Layer`` with ``paddle.jit`` and convert it with paddle2onnx.

Command line::

    python -m converters.paddle mypackage.models:small_cnn --input-shape 1x3x32x32 -o cnn.onnx

paddle2onnx stores an unknown batch as a symbol or as -1; n2nonnx reads both as unknown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from converters._common import (
    ExportReport,
    finish,
    load_factory,
    missing,
    random_example,
    run_cli,
    shape_arguments,
)


def export(
    layer: Any,
    example: np.ndarray,
    path: str | Path | None = None,
    *,
    opset: int = 13,
    input_name: str = "x",
) -> ExportReport:
    """Export a Paddle layer (eval mode) with paddle2onnx and compare it with onnxruntime.

    Args:
        layer: a ``paddle.nn.Layer`` with one input.
        example: an example input (batch first); the batch is exported unknown.
        path: where to write the ``.onnx`` file (None: keep it in memory).
        opset: default-domain opset.
        input_name: the graph input's name.

    Returns:
        An :class:`~converters.pytorch.ExportReport`.
    """
    try:
        import paddle
        import paddle2onnx
    except ImportError:
        raise missing("paddlepaddle / paddle2onnx", "paddle") from None
    example = np.asarray(example, dtype=np.float32)
    layer.eval()
    spec = [paddle.static.InputSpec([None, *example.shape[1:]], "float32", input_name)]
    with tempfile.TemporaryDirectory(prefix="n2nonnx-paddle-") as scratch:
        prefix = Path(scratch) / "model"
        paddle.jit.save(layer, str(prefix), input_spec=spec)
        program = next(
            p for p in (prefix.with_suffix(".json"), prefix.with_suffix(".pdmodel")) if p.exists()
        )
        target = Path(scratch) / "model.onnx"
        paddle2onnx.export(
            str(program),
            str(prefix.with_suffix(".pdiparams")),
            str(target),
            opset_version=opset,
            verbose=False,
        )
        proto = onnx.load(str(target))
    expected = layer(paddle.to_tensor(example))
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    return finish(proto, {proto.graph.input[0].name: example}, [e.numpy() for e in expected], path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters.paddle MODULE:CALLABLE --input-shape 1x3x32x32 -o out.onnx``."""
    parser = argparse.ArgumentParser(
        prog="python -m converters.paddle",
        description="Export a PaddlePaddle layer to ONNX (paddle2onnx) and check it in onnxruntime.",
    )
    shape_arguments(parser, "a paddle.nn.Layer")
    args = parser.parse_args(argv)
    args.opset = args.opset if args.opset != 17 else 13

    def export_model() -> ExportReport:
        model = load_factory(args.factory)()
        return export(model, random_example(args), args.output, opset=args.opset)

    return run_cli("paddle", export_model, args)


if __name__ == "__main__":
    sys.exit(main())
