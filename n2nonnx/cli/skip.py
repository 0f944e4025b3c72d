"""The ``n2nonnx skip`` verb: add N2NSkip connections to a (pruned) ONNX model.

:func:`add_skip_options` and :func:`skip_options` are shared with ``prune --n2nskip``.
"""

from __future__ import annotations

import argparse
from typing import Any

from n2nonnx.cli import add_input_shape_option, parse_input_shapes
from n2nonnx.errors import InvalidArgumentError

DESCRIPTION = """\
Spend part of the model's non-zero budget on sparse, learnable neuron-to-neuron skip
connections between non-consecutive layers (N2NSkip, papers.md section 1). The result
keeps the density: with --skip-share 0.5 a model pruned to 10% becomes 5% sequential +
5% skip weights (sequential weights are removed at random to make room). A dense model
needs --density. Per-pair counts and the pairs left out are recorded in the model's
metadata (see `n2nonnx inspect --json`)."""

EXAMPLE = """\
example:
  n2nonnx skip pruned.onnx -o skip.onnx --skip-share 0.5 --seed 0
  n2nonnx skip dense.onnx -o skip.onnx --density 0.1 --max-k 3 --sampling uniform"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``skip`` sub-command.

    Args:
        subparsers: the CLI's sub-parser collection.
    """
    parser = subparsers.add_parser(
        "skip",
        help="add sparse N2NSkip connections within the model's non-zero budget",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="the ONNX model (pruned, or dense with --density)")
    parser.add_argument("-o", "--output", required=True, help="where to write the N2NSkip model")
    parser.add_argument("--density", type=float, default=None,
                        help="non-zero fraction of sequential + skip weights (default: the model's own)")
    add_skip_options(parser)
    add_input_shape_option(parser)
    parser.add_argument("--force", action="store_true", help="allow overwriting the input file")
    parser.set_defaults(func=run)


def add_skip_options(parser: argparse.ArgumentParser) -> None:
    """The N2NSkip options (``--skip-share``, ``--pairs`` ...), shared with ``prune --n2nskip``.

    Args:
        parser: the parser to extend (``--seed`` and ``--density`` are left to the verb).
    """
    group = parser.add_argument_group("N2NSkip")
    group.add_argument("--skip-share", type=float, default=0.5,
                       help="part of the non-zero budget for skip weights, in [0, 1) (default 0.5)")
    group.add_argument("--max-k", type=int, default=None,
                       help="only pairs at most this many layers apart (default: all pairs, k >= 2)")
    group.add_argument("--pair", action="append", metavar="SOURCE,TARGET", default=None,
                       help="an explicit pair of layer (or input) names; repeat for several")
    group.add_argument("--per-target", type=int, default=None,
                       help="at most this many (nearest) sources per target layer")
    group.add_argument("--spread", choices=("proportional", "equal"), default="proportional",
                       help="split the skip budget by the pairs' dense sizes or equally")
    group.add_argument("--sampling", choices=("block", "uniform"), default="block",
                       help="block: connections on a random subset of source units (fast, default); "
                       "uniform: uniformly random as in the paper")
    group.add_argument("--merge", choices=("target", "pair"), default="target",
                       help="target: one skip layer per target over its concatenated sources (fast, "
                       "default); pair: one skip layer per pair, summed (eq. 2 per pair)")
    group.add_argument("--join", choices=("activation", "preact"), default="activation",
                       help="add into the input of the target's nonlinearity (after BatchNorm, default) "
                       "or into its raw output (before BatchNorm)")
    group.add_argument("--kernel", choices=("target", "1x1"), default="target",
                       help="skip conv kernel: the target's kernel size, or 1x1")
    group.add_argument("--pool", choices=("max", "avg"), default="max",
                       help="spatial alignment pooling (default max, as in the authors' code)")
    group.add_argument("--init-scale", type=float, default=1.0,
                       help="multiplier of the Kaiming-normal initial skip weights (default 1)")
    if not any("--seed" in action.option_strings for action in parser._actions):
        group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def skip_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`n2nonnx.skip.add_n2nskip` from parsed options.

    Args:
        args: options parsed by a parser extended with :func:`add_skip_options`.

    Returns:
        Everything but ``density`` (which each verb defines itself).
    """
    if args.pair and args.max_k is not None:
        raise InvalidArgumentError("give either --pair or --max-k, not both")
    pairs: Any = "all"
    if args.pair:
        pairs = []
        for text in args.pair:
            source, comma, target = text.partition(",")
            if not comma or not source or not target:
                raise InvalidArgumentError(f"--pair {text!r} is not SOURCE,TARGET (layer or input names)")
            pairs.append((source, target))
    elif args.max_k is not None:
        pairs = args.max_k
    return {
        "skip_share": args.skip_share, "pairs": pairs, "per_target": args.per_target,
        "spread": args.spread, "sampling": args.sampling, "merge": args.merge, "join": args.join,
        "kernel": args.kernel, "pool": args.pool,
        "init_scale": args.init_scale, "seed": args.seed,
    }


def run(args: argparse.Namespace) -> int:
    """Load, add the skips, save, and print a one-line summary per pair.

    Args:
        args: the parsed options.

    Returns:
        The exit status (0).
    """
    from n2nonnx.io import load, save
    from n2nonnx.metadata import stages
    from n2nonnx.skip import add_n2nskip

    options = skip_options(args)
    model = load(args.input, parse_input_shapes(args.input_shape))
    result = add_n2nskip(model, density=args.density, **options)
    path = save(result, args.output, overwrite_source=args.force)
    record = stages(result.proto, "n2nskip")[-1]
    for pair in record["pairs"]:
        print(f"  {pair['source']} -> {pair['target']}  k={pair['k']}  {pair['nonzeros']}/{pair['dense_size']} "
              f"weights  {pair['alignment']}")
    print(
        f"wrote {path}: {len(record['pairs'])} skip pairs, {record['skip_nonzeros']} skip + "
        f"{record['sequential']['after']} sequential non-zeros (density {record['density']:.4g}), "
        f"{len(record['left_out'])} pairs left out"
    )
    return 0
