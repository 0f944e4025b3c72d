"""``n2nonnx inspect``: the layer table of a model."""

from __future__ import annotations

import argparse
import json

from n2nonnx.cli import options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` verb."""
    parser = options.add_verb(
        subparsers,
        "inspect",
        "print a model's prunable layers, units and wiring",
        "Print the layer table of an ONNX model: layer, op, weight shape, parameters, density,\n"
        "units, spatial sizes, depth and which layers each one feeds.",
        "example:\n  n2nonnx inspect model.onnx --json",
    )
    options.add_input(parser, "the ONNX model")
    options.add_input_shape(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table (schema n2nonnx.inspect/1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of ``args.input``."""
    from n2nonnx.io import load
    from n2nonnx.summary import describe, format_table

    model = load(args.input, options.parse_input_shapes(args.input_shape))
    document = describe(model)
    print(json.dumps(document, indent=2) if args.json else format_table(document))
    return 0
