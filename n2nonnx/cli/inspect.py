"""``n2nonnx inspect``: the layer table of a model."""

from __future__ import annotations

import argparse
import json

from n2nonnx.cli import add_input_shape_option, parse_input_shapes


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print a model's prunable layers, their shapes, units and wiring",
        description="Print the layer table of an ONNX model: layer, op, weight shape, "
        "parameters, units, spatial sizes, depth and which layers each one feeds.",
    )
    parser.add_argument("model", help="the .onnx file")
    add_input_shape_option(parser)
    parser.add_argument("--json", action="store_true",
                        help="print JSON instead of a table (schema: n2nonnx.inspect/1, see n2nonnx.summary)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from n2nonnx.io import load
    from n2nonnx.summary import describe, format_table

    model = load(args.model, parse_input_shapes(args.input_shape))
    document = describe(model)
    print(json.dumps(document, indent=2) if args.json else format_table(document))
    return 0
