"""The ``n2nonnx`` command: one module per verb in this package, discovered automatically.

A verb module defines ``register(subparsers)`` (adding its subparser, with
``set_defaults(func=run)``) and ``run(args) -> int``. Errors of the n2nonnx family are
printed on one line with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from n2nonnx import __version__
from n2nonnx.errors import N2NError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb module's subcommand."""
    parser = argparse.ArgumentParser(
        prog="n2nonnx",
        description=(
            "Prune ONNX models at initialization, add sparse N2NSkip connections, measure "
            "connectivity, train with PyTorch and deploy with onnxruntime."
        ),
    )
    parser.add_argument("--version", action="version", version=f"n2nonnx {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except N2NError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parse_input_shapes(values: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``["x=1x3x32x32", ...]`` -> ``{"x": (1, 3, 32, 32)}`` (shared by verbs)."""
    from n2nonnx.errors import InvalidArgumentError

    if not values:
        return None
    shapes = {}
    for value in values:
        name, _, dims = value.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise InvalidArgumentError(
                f"--input-shape {value!r} is not NAME=DIMS like x=1x3x32x32"
            ) from None
        if not name or not shapes[name] or min(shapes[name]) < 1:
            raise InvalidArgumentError(f"--input-shape {value!r} is not NAME=DIMS like x=1x3x32x32")
    return shapes


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    """The ``--input-shape NAME=1x3x32x32`` option (repeatable)."""
    parser.add_argument(
        "--input-shape", action="append", metavar="NAME=DIMS",
        help="fix a symbolic input shape, e.g. x=1x3x32x32 (repeat for several inputs)",
    )
