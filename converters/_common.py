"""What every converter shares: the onnxruntime check, the report, saving, the CLI parts."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from n2nonnx.errors import InvalidArgumentError, N2NError
from n2nonnx.runtime import run

__all__ = [
    "ExportReport",
    "finish",
    "load_factory",
    "missing",
    "parse_shape",
    "factory_main",
    "random_example",
    "run_cli",
    "shape_arguments",
]


@dataclass(frozen=True)
class ExportReport:
    """What an export produced.

    Attributes:
        proto: the exported model.
        path: where it was written (None if only in memory).
        max_abs_diff: largest absolute difference between the framework's outputs and
            onnxruntime's on the example inputs.
        opset: the default-domain opset of the export.
    """

    proto: onnx.ModelProto
    path: Path | None
    max_abs_diff: float
    opset: int


def finish(
    proto: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    expected: Sequence[np.ndarray],
    path: str | Path | None,
) -> ExportReport:
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
        (
            float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))))
            if np.size(a)
            else 0.0
            for a, e in zip(actual, expected, strict=True)
        ),
        default=0.0,
    )
    written = None
    if path is not None:
        from n2nonnx.io import save

        written = save(proto, path)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportReport(proto=proto, path=written, max_abs_diff=diff, opset=int(opset))


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x16x16x3`` -> ``(1, 16, 16, 3)``.

    Args:
        text: the ``--input-shape`` value.

    Returns:
        The dims.

    Raises:
        InvalidArgumentError: a part is not an integer.
    """
    try:
        return tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InvalidArgumentError(f"--input-shape {text!r} is not like 1x3x32x32") from None


def load_factory(spec: str, example: str = "mypackage.models:small_cnn") -> Any:
    """The callable named by ``MODULE:CALLABLE``.

    Args:
        spec: ``MODULE:CALLABLE``.
        example: a spec shown in the message when ``spec`` has no colon.

    Returns:
        The attribute ``CALLABLE`` of the imported ``MODULE``.

    Raises:
        InvalidArgumentError: a malformed spec, or one that cannot be imported.
    """
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise InvalidArgumentError(f"{spec!r} is not MODULE:CALLABLE (e.g. {example})")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidArgumentError(f"cannot import {spec!r}: {error}") from None


def shape_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Add the arguments every converter CLI takes.

    Args:
        parser: the converter's parser.
        what: what the factory returns, for the help text.
    """
    parser.add_argument("factory", help=f"MODULE:CALLABLE returning {what}")
    parser.add_argument(
        "--input-shape", required=True, help="example input shape, batch first, e.g. 1x16x16x3"
    )
    output_arguments(parser)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0, help="seed of the example inputs")


def output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``-o/--output`` and ``--force``, as every n2nonnx verb has them."""
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")


def missing(package: str, extra: str) -> InvalidArgumentError:
    """The error for a framework that is not installed.

    Args:
        package: the missing package(s), as the message names them.
        extra: the n2nonnx extra that installs them.

    Returns:
        The error, to raise.
    """
    return InvalidArgumentError(f"{package} is not installed; pip install 'n2nonnx[{extra}]'")


def random_example(args: argparse.Namespace) -> np.ndarray:
    """A float32 standard-normal example input of ``--input-shape``, drawn with ``--seed``.

    Args:
        args: parsed arguments with ``input_shape`` and ``seed``.

    Returns:
        The example input.
    """
    shape = parse_shape(args.input_shape)
    return np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)


def run_cli(
    framework: str, export_model: Callable[[], ExportReport], args: argparse.Namespace
) -> int:
    """Run a converter's export for its command line and report the outcome.

    Args:
        framework: the framework's short name, for the summary line.
        export_model: builds and exports the model.
        args: the parsed arguments (``output``, ``force``): an existing output file is
            replaced only with ``--force``, checked before the export.

    Returns:
        The exit status: 0, or 2 after printing an :class:`N2NError` on one line.
    """
    from n2nonnx.paths import check_output_file

    try:
        check_output_file(args.output, label="-o", force=args.force, suffixes=(".onnx",))
        report = export_model()
    except N2NError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.path} (opset {report.opset}); "
        f"max |{framework} - onnxruntime| = {report.max_abs_diff:.3g}"
    )
    return 0


def factory_main(
    argv: Sequence[str] | None,
    *,
    framework: str,
    description: str,
    what: str,
    export: Callable[..., ExportReport],
) -> int:
    """The command line of a converter whose model comes from ``MODULE:CALLABLE``.

    Args:
        argv: the arguments (None: ``sys.argv``).
        framework: the framework's short name, also the converter's module name.
        description: the parser's description.
        what: what the factory returns, for the help text.
        export: the converter's ``export(model, example, path, *, opset)``.

    Returns:
        The exit status (see :func:`run_cli`).
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m converters.{framework}", description=description
    )
    shape_arguments(parser, what)
    args = parser.parse_args(argv)

    def export_model() -> ExportReport:
        model = load_factory(args.factory)()
        return export(model, random_example(args), args.output, opset=args.opset)

    return run_cli(framework, export_model, args)
