"""``n2nonnx prune``: prune at initialization, masks in the graph (optionally + N2NSkip)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from n2nonnx.cli import add_input_shape_option
    from n2nonnx.cli.skip import add_skip_options
    from n2nonnx.pruning.allocation import ALLOCATIONS

    parser = subparsers.add_parser(
        "prune",
        help="prune a model at initialization (random, expander, magnitude, snip, grasp, synflow)",
        description="Score the prunable weights, keep --density of them (allocated per layer by "
        "--allocation) and write the model with a mask initializer per pruned weight.",
    )
    parser.add_argument("model", help="the .onnx file to prune (not modified)")
    add_input_shape_option(parser)
    parser.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    parser.add_argument("--method", default="snip",
                        help="random, expander, magnitude, snip (csp), grasp, synflow (default: snip)")
    parser.add_argument("--density", type=float, required=True, help="fraction of weights kept, e.g. 0.05")
    parser.add_argument("--allocation", choices=ALLOCATIONS, default="global",
                        help="how the budget is split over layers (default: global)")
    parser.add_argument("--data", help="data for snip/grasp: mnist1d, digits, synthetic, or an .npz file")
    parser.add_argument("--batch-size", type=int, default=128, help="SNIP mini-batch size (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="leave layers matching a name / glob / regex dense (repeatable)")
    parser.add_argument("--first-last-density", type=float,
                        help="keep the first and last layers at this density")
    parser.add_argument("--masks", help="use these masks (.npz keyed by weight name) instead of a method")
    parser.add_argument("--temperature", type=float, default=200.0, help="GraSP logit temperature")
    parser.add_argument("--iterations", type=int, default=100, help="SynFlow rounds (default 100)")
    parser.add_argument("--rescale", action="store_true",
                        help="scale each unit's kept weights by sqrt(fan-in / kept fan-in) (fan-in-corrected init)")
    parser.add_argument("--force", action="store_true", help="allow -o to overwrite the input file")
    parser.add_argument("--n2nskip", action="store_true",
                        help="then add N2NSkip connections within the same budget (options below; see `n2nonnx skip`)")
    add_skip_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from n2nonnx.cli import parse_input_shapes
    from n2nonnx.io import load, save
    from n2nonnx.pruning import format_prune_table, prune, prune_table

    model = load(args.model, parse_input_shapes(args.input_shape))
    from n2nonnx.cli.skip import skip_options

    density = args.density
    if args.n2nskip:
        from n2nonnx.errors import InvalidArgumentError

        options = skip_options(args)
        if not 0 <= args.skip_share < 1:
            raise InvalidArgumentError(f"--skip-share must be in [0, 1), got {args.skip_share}")
        density = args.density * (1 - args.skip_share)  # the sequential part of the budget
    pruned = prune(
        model, args.method, density, allocation=args.allocation, data=args.data,
        batch_size=args.batch_size, seed=args.seed, exclude=args.exclude,
        first_last_density=args.first_last_density, masks=args.masks,
        options={"temperature": args.temperature, "iterations": args.iterations}, rescale=args.rescale,
    )
    if args.n2nskip:
        from n2nonnx.skip import add_n2nskip

        pruned = add_n2nskip(pruned, density=args.density, **options)
    path = save(pruned, args.output, overwrite_source=args.force)
    print(format_prune_table(prune_table(pruned)))
    print(f"\nwrote {path}")
    return 0
