"""What every converter shares: the onnxruntime check, the report, saving, the CLI parts."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from converters.pytorch import ExportReport
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import run

__all__ = ["ExportReport", "finish", "load_factory", "parse_shape", "shape_arguments"]


def finish(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray], expected: Sequence[np.ndarray],
           path: str | Path | None) -> ExportReport:
    """Run ``proto`` in onnxruntime on ``feeds``, compare with ``expected``, save if asked.

    Args:
        proto: the exported model.
        feeds: input name -> example input.
        expected: the framework's own outputs on ``feeds``, in graph-output order.
        path: where to write the model (None: keep it in memory).

    Returns:
        The :class:`ExportReport` (largest absolute difference over all outputs).
    """
    actual = run(proto, dict(feeds))
    diff = max(
        (float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)))) if np.size(a) else 0.0
         for a, e in zip(actual, expected, strict=True)),
        default=0.0,
    )
    written = None
    if path is not None:
        from n2nonnx.io import save

        written = save(proto, path)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportReport(proto=proto, path=written, max_abs_diff=diff, opset=int(opset))


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x16x16x3`` -> ``(1, 16, 16, 3)``."""
    try:
        return tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InvalidArgumentError(f"--input-shape {text!r} is not like 1x3x32x32") from None


def load_factory(spec: str):
    """The callable named by ``MODULE:CALLABLE``."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise InvalidArgumentError(f"{spec!r} is not MODULE:CALLABLE (e.g. mypackage.models:small_cnn)")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidArgumentError(f"cannot import {spec!r}: {error}") from None


def shape_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The arguments every converter CLI takes."""
    parser.add_argument("factory", help=f"MODULE:CALLABLE returning {what}")
    parser.add_argument("--input-shape", required=True, help="example input shape, batch first, e.g. 1x16x16x3")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0, help="seed of the example inputs")


def missing(package: str, extra: str) -> InvalidArgumentError:
    """The error for a framework that is not installed."""
    return InvalidArgumentError(f"{package} is not installed; pip install 'n2nonnx[{extra}]'")
