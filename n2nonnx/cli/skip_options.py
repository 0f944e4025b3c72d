"""The N2NSkip options, shared by ``skip``, ``prune --n2nskip`` and ``run``.

Built from the fields of :class:`~n2nonnx.skip.options.SkipOptions` (defaults, choices and
help are defined there once), plus ``--max-k`` and ``--pair``, two command-line spellings
of its ``pairs``. The authors' code variant is ``--pairs blocks --sampling channel
--skip-norm batchnorm --pool-at output`` (with the defaults ``--join activation --kernel
target --pool max``).
"""

from __future__ import annotations

import argparse
from typing import Any

from n2nonnx.cli.options import add_fields, field_values
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.skip.options import SkipOptions


def add_skip_options(parser: argparse.ArgumentParser, defaults: SkipOptions | None = None) -> None:
    """``--skip-share``, ``--pair``, ``--sampling`` ... in an "N2NSkip" group.

    Args:
        parser: the verb's parser (``--seed`` and ``--density`` belong to the verb).
        defaults: the verb's defaults (``SkipOptions()`` by default).
    """
    group = parser.add_argument_group("N2NSkip")
    add_fields(group, SkipOptions, ["skip_share"], defaults)
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
    add_fields(
        group,
        SkipOptions,
        [
            "per_target",
            "spread",
            "min_pair_weights",
            "pairs",
            "sampling",
            "placement",
            "skip_norm",
            "pool_at",
            "merge",
            "join",
            "kernel",
            "pool",
            "init_scale",
        ],
        defaults,
    )


def skip_options(args: argparse.Namespace) -> SkipOptions:
    """The :class:`SkipOptions` of parsed options (``--pair`` / ``--max-k`` read into ``pairs``).

    Raises:
        InvalidArgumentError: contradictory or malformed pair options, or a value
            :class:`SkipOptions` refuses.
    """
    default_pairs = SkipOptions().pairs
    if args.pair and args.max_k is not None:
        raise InvalidArgumentError("give either --pair or --max-k, not both")
    if args.pairs != default_pairs and (args.pair or args.max_k is not None):
        raise InvalidArgumentError(
            f"--pairs {args.pairs} chooses the pairs itself: drop --pair / --max-k"
        )
    pairs: Any = args.pairs
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
    return SkipOptions(**{**field_values(args, SkipOptions), "pairs": pairs})


def skip_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`n2nonnx.skip.add_n2nskip` from parsed options (no density).

    Raises:
        InvalidArgumentError: see :func:`skip_options`.
    """
    return skip_options(args).kwargs()


def skip_summary(record: dict[str, Any]) -> str:
    """One line on an ``n2nskip`` metadata record: pairs, pairs dropped, non-zeros, density.

    Per-pair details are logged by :func:`~n2nonnx.skip.add_n2nskip` (shown with ``-v``).

    Args:
        record: the model's last ``n2nskip`` stage record.

    Returns:
        ``"N skip pairs, K dropped/merged below M weights, S skip + Q sequential non-zeros
        (density D), L other pairs left out"``.
    """
    dropped = int(record.get("below_minimum", 0))
    others = len(record["left_out"]) - dropped
    return (
        f"{len(record['pairs'])} skip pairs, {dropped} dropped/merged below "
        f"{record.get('min_pair_weights', 1)} weights, {record['skip_nonzeros']} skip + "
        f"{record['sequential']['after']} sequential non-zeros (density {record['density']:.4g}), "
        f"{others} other pairs left out"
    )
