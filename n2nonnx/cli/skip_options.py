"""The N2NSkip options, shared by ``skip``, ``prune --n2nskip`` and ``run``.

The authors' code variant is ``--pairs blocks --sampling channel --skip-norm batchnorm
--pool-at output`` (with the defaults ``--join activation --kernel target --pool max``).
"""

from __future__ import annotations

import argparse
from typing import Any

from n2nonnx.errors import InvalidArgumentError


def add_skip_options(
    parser: argparse.ArgumentParser, *, skip_share: float = 0.5, join: str = "activation"
) -> None:
    """``--skip-share``, ``--pair``, ``--sampling`` ... in an "N2NSkip" group.

    Args:
        parser: the verb's parser (``--seed`` and ``--density`` belong to the verb).
        skip_share: the verb's default share of the budget spent on skips.
        join: the verb's default join point.
    """
    group = parser.add_argument_group("N2NSkip")
    group.add_argument(
        "--skip-share",
        type=float,
        default=skip_share,
        metavar="SHARE",
        help="part of the non-zero budget spent on skip weights, in [0, 1)",
    )
    group.add_argument(
        "--max-k",
        type=int,
        default=None,
        metavar="K",
        help="only pairs at most K layers apart (default: all pairs, k >= 2)",
    )
    group.add_argument(
        "--pair",
        action="append",
        metavar="SOURCE,TARGET",
        default=None,
        help="an explicit pair of layer (or input) names; repeat for several",
    )
    group.add_argument(
        "--per-target",
        type=int,
        default=None,
        metavar="N",
        help="at most N (nearest) sources per target layer",
    )
    group.add_argument(
        "--spread",
        choices=("proportional", "equal"),
        default="proportional",
        help="split the skip budget by the pairs' dense sizes, or equally",
    )
    group.add_argument(
        "--pairs",
        choices=("all", "blocks"),
        default="all",
        help="all: every non-consecutive pair whose shapes align; blocks: each conv block's "
        "input to the next block's first conv (the authors' VGG code; needs two conv blocks)",
    )
    group.add_argument(
        "--sampling",
        choices=("block", "uniform", "channel"),
        default="block",
        help="block: connections on a random subset of source units (fast); "
        "uniform: uniformly random as in the paper; channel: whole kernels of "
        "int(C_in x density) random source channels per target channel (the authors' code)",
    )
    group.add_argument(
        "--placement",
        choices=("random", "connectivity"),
        default="random",
        help="random (the paper); connectivity: first give units of the pruned graph their "
        "missing input / output paths and join cut-off components, then the rest at random "
        "(none out of the graph inputs); the same number of non-zeros",
    )
    group.add_argument(
        "--skip-norm",
        choices=("none", "batchnorm"),
        default="none",
        help="batchnorm: the skip path gets its own BatchNorm between its conv and its "
        "activation (the authors' code)",
    )
    group.add_argument(
        "--pool-at",
        choices=("source", "output"),
        default="source",
        help="source: pool the source to the target's size before the skip conv (cheapest); "
        "output: skip conv at the block input's size, max-pool after the activation "
        "(the authors' code)",
    )
    group.add_argument(
        "--merge",
        choices=("target", "pair"),
        default="target",
        help="target: one skip layer per target over its concatenated sources (fast); "
        "pair: one skip layer per pair, summed",
    )
    group.add_argument(
        "--join",
        choices=("activation", "preact"),
        default=join,
        help="add into the input of the target's nonlinearity (after BatchNorm) "
        "or into its raw output (before BatchNorm)",
    )
    group.add_argument(
        "--kernel",
        choices=("target", "1x1"),
        default="target",
        help="skip conv kernel: the target's kernel size, or 1x1",
    )
    group.add_argument(
        "--pool",
        choices=("max", "avg"),
        default="max",
        help="spatial alignment pooling (max, as in the authors' code)",
    )
    group.add_argument(
        "--init-scale",
        type=float,
        default=1.0,
        metavar="SCALE",
        help="multiplier of the Kaiming-normal initial skip weights",
    )


def skip_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`n2nonnx.skip.add_n2nskip` from parsed options (no density).

    Raises:
        InvalidArgumentError: contradictory or malformed pair options.
    """
    if args.pair and args.max_k is not None:
        raise InvalidArgumentError("give either --pair or --max-k, not both")
    if args.pairs != "all" and (args.pair or args.max_k is not None):
        raise InvalidArgumentError(
            f"--pairs {args.pairs} chooses the pairs itself: drop --pair / --max-k"
        )
    if not 0 <= args.skip_share < 1:
        raise InvalidArgumentError(f"--skip-share must be in [0, 1), got {args.skip_share}")
    pairs: Any = "all"
    if args.pair:
        pairs = []
        for text in args.pair:
            source, comma, target = text.partition(",")
            if not comma or not source or not target:
                raise InvalidArgumentError(
                    f"--pair {text!r} is not SOURCE,TARGET (layer or input names)"
                )
            pairs.append((source, target))
    elif args.max_k is not None:
        pairs = args.max_k
    elif args.pairs != "all":
        pairs = args.pairs
    return {
        "skip_share": args.skip_share,
        "pairs": pairs,
        "per_target": args.per_target,
        "spread": args.spread,
        "sampling": args.sampling,
        "placement": args.placement,
        "merge": args.merge,
        "join": args.join,
        "kernel": args.kernel,
        "pool": args.pool,
        "pool_at": args.pool_at,
        "skip_norm": args.skip_norm,
        "init_scale": args.init_scale,
        "seed": args.seed,
    }
