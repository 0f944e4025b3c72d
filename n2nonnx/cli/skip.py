"""``n2nonnx skip``: add N2NSkip connections to a (pruned) ONNX model."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options
from n2nonnx.cli.skip_options import add_skip_options, skip_options, skip_summary

DESCRIPTION = """\
Spend part of the model's non-zero budget on sparse, learnable neuron-to-neuron skip
connections between non-consecutive layers (N2NSkip, Subramaniam & Sharma, BMVC 2020). The
result keeps the density: with --skip-share 0.5 a model pruned to 10% becomes 5% sequential
+ 5% skip weights (sequential weights are removed at random to make room). A dense model
needs --density. Per-pair counts and the pairs left out are recorded in the model's
metadata (see `n2nonnx inspect --json`); -v logs one line per pair. Pairs that would hold
fewer than --min-pair-weights weights are dropped and their weights given to the others."""

EXAMPLE = """\
examples:
  n2nonnx skip pruned.onnx -o skip.onnx --skip-share 0.5 --seed 0
  n2nonnx skip dense.onnx -o skip.onnx --density 0.1 --max-k 3 --sampling uniform
  n2nonnx skip pruned.onnx -o skip.onnx --skip-share 0.5 --repair"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``skip`` verb."""
    parser = options.add_verb(
        subparsers, "skip", "add sparse N2NSkip connections", DESCRIPTION, EXAMPLE
    )
    options.add_input(parser, "the ONNX model (pruned, or dense with --density; never modified)")
    options.add_output(parser, "where to write the N2NSkip model")
    parser.add_argument(
        "--density",
        type=options.fraction,
        default=None,
        metavar="D",
        help="non-zero fraction of sequential + skip weights (default: the model's own)",
    )
    options.add_seed(parser)
    options.add_input_shape(parser)
    options.add_repair(parser)
    add_skip_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, add the skips, save, and print one summary line (per-pair lines with ``-v``)."""
    from n2nonnx.io import load, save
    from n2nonnx.metadata import stages
    from n2nonnx.paths import check_output_file
    from n2nonnx.skip import add_n2nskip_with

    settings = skip_options(args)
    check_output_file(
        args.output, label="-o", force=args.force, inputs=[args.input], suffixes=(".onnx",)
    )
    model = load(args.input, options.parse_input_shapes(args.input_shape))
    result = add_n2nskip_with(model, settings, density=args.density)
    if args.repair:  # skip weights have no criterion scores: moved at random
        from n2nonnx.connectivity.repair import repair_dead_weights

        result = repair_dead_weights(result, seed=args.seed)
    path = save(result, args.output)
    record = stages(result.proto, "n2nskip")[-1]
    options.print_repairs(result, int(args.repair))
    print(f"wrote {path}: {skip_summary(record)}")
    return 0
