"""``n2nonnx study``: the N2NSkip paper's comparison at CPU scale, resumable."""

from __future__ import annotations

import argparse
from typing import TypedDict

from n2nonnx.cli import options
from n2nonnx.study import ARCHS, DEFAULT_VARIANTS, FACTORS, VARIANTS
from n2nonnx.study.grid import AUTHORS_OPTIONS, option_text

FACTOR_HELP = {
    "allocation": "layer-wise allocation of the sequential budget",
    "repair": "move the budget of dead weights to live paths (see prune --repair)",
    "skip_share": "part of the budget spent on skip weights (N2NSkip variants)",
    "sampling": "N2NSkip sampling (see skip --sampling)",
    "join": "where a skip is added (see skip --join)",
    "placement": "where the skip budget goes (see skip --placement)",
    "skip_norm": "a BatchNorm on the skip path (see skip --skip-norm)",
    "pairs": "which layer pairs get skips (see skip --pairs)",
    "pool_at": "where a skip is pooled to the target's size (see skip --pool-at)",
}


def _table_name(text: str) -> str:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise argparse.ArgumentTypeError(f"a table name is letters, digits, - and _, got {text!r}")
    return text


class StudySize(TypedDict):
    """The defaults of one study size: architectures, seeds and epochs per run."""

    archs: list[str]
    seeds: list[int]
    epochs: int


# The default size finishes in about 15 minutes on 2 cores; --full is the README's study.
QUICK: StudySize = {"archs": ["mlp"], "seeds": [0, 1], "epochs": 10}
FULL: StudySize = {"archs": ["mlp", "vgg1d"], "seeds": [0, 1, 2], "epochs": 15}
DESCRIPTION = """\
Train every variant at every density and seed with the same recipe, keep each finished run
under OUT/cells (an interrupted study resumes; a cell run under other settings is redone),
and write OUT/results.md (mean +- std), OUT/results.json and plots (--name). The default size
finishes in about 15 minutes on 2 cores with --threads 1; --full runs the README's study
(both architectures, 3 seeds, 15 epochs)."""

EXAMPLE = f"""\
examples:
  n2nonnx study --out runs/study --threads 1
  n2nonnx study --full --out runs/study --threads 1
  n2nonnx study --arch vgg1d --width 1 2 --allocation erk uniform --variants RP N2NSkip-RP \\
      N2NSkip-RP:placement=connectivity N2NSkip-RP:repair=on --out runs/crossover --threads 1

Every option in the "varied" group takes one value or several: each variant it applies to
runs at every value (the product over options), and each cell is keyed by the values it ran
with. A variant may also carry its own: VARIANT:OPTION=VALUE[,OPTION=VALUE] (option names
as below, with - or _); the authors' code skips are
N2NSkip-RP:{AUTHORS_OPTIONS}."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` verb."""
    parser = options.add_verb(
        subparsers, "study", "the N2NSkip comparison over densities and seeds", DESCRIPTION, EXAMPLE
    )
    options.add_out_dir(parser, "runs/study")
    parser.add_argument("--full", action="store_true", help="the full study (the README's numbers)")
    parser.add_argument(
        "--arch", nargs="+", choices=tuple(ARCHS), help="architectures (default by size)"
    )
    parser.add_argument(
        "--width",
        nargs="+",
        type=options.positive_number,
        default=[1.0],
        metavar="X",
        help="width multipliers of every layer (an architecture per value: vgg1d-x2 ...)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT[:OPTION=VALUE,...]",
        help=f"variants, from {', '.join(VARIANTS)} (default: the paper's five)",
    )
    parser.add_argument(
        "--densities",
        nargs="+",
        type=options.fraction,
        default=[0.1, 0.05, 0.02],
        metavar="D",
        help="densities",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=options.seed_value, metavar="N", help="seeds (default by size)"
    )
    options.add_data(parser, default="mnist1d")
    parser.add_argument(
        "--name",
        default="results",
        type=_table_name,
        help="the summary's file names: OUT/NAME.md, OUT/NAME.json and figures (several "
        "tables can share one folder of cells)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="write the tables from the cells already in OUT and run none (a grid left "
        "unfinished: its missing cells are left blank)",
    )
    parser.add_argument(
        "--no-rescale", action="store_true", help="keep the kept weights' dense-init scale"
    )
    varied = parser.add_argument_group("varied (one value or several)")
    for name, factor in FACTORS.items():
        flag = "--" + name.replace("_", "-")
        default = "the variant's own" if factor.default is None else option_text(factor.default)
        if factor.choices == (False, True):
            varied.add_argument(
                flag,
                nargs="*",
                choices=("on", "off"),
                default=argparse.SUPPRESS,
                help=f"{FACTOR_HELP[name]}; alone means on (default: off)",
            )
            continue
        varied.add_argument(
            flag,
            nargs="+",
            choices=factor.choices,
            type=options.share if factor.choices is None else str,
            default=argparse.SUPPRESS,
            metavar=None if factor.choices else "SHARE",
            help=f"{FACTOR_HELP[name]} (default: {default})",
        )
    options.add_threads(parser)
    options.add_progress(parser)
    options.add_training(parser)
    parser.set_defaults(func=run, epochs=None)


def run(args: argparse.Namespace) -> int:
    """Run the missing cells and print the summary table."""
    from pathlib import Path

    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.study import StudyPlan, run_study
    from n2nonnx.training import TrainConfig
    from n2nonnx.training.distributed import from_main, session

    size = FULL if args.full else QUICK
    if args.epochs is None:
        args.epochs = size["epochs"]
    recipe = options.training_options(args)
    TrainConfig.from_options(**recipe)  # validated before any work
    factors = {}
    for name in FACTORS:
        values = getattr(args, name, None)
        if values is None:
            continue
        if FACTORS[name].choices == (False, True):
            values = [text == "on" for text in values] or [True]
        factors[name] = list(dict.fromkeys(values))
    plan = StudyPlan(
        archs=args.arch or size["archs"],
        variants=args.variants or list(DEFAULT_VARIANTS),
        densities=args.densities,
        seeds=args.seeds if args.seeds is not None else size["seeds"],
        data=args.data,
        recipe=recipe,
        widths=list(dict.fromkeys(args.width)),
        factors=factors,
        rescale=not args.no_rescale,
        name=args.name,
    )
    plan.cells()  # unknown architectures or variants fail here, before any work
    if args.summary_only:
        from n2nonnx.study import summarize

        if not Path(args.out, "cells").is_dir():
            raise InvalidArgumentError(f"{args.out} has no cells/ folder: run the study first")
        summarize(plan, args.out, refuse_empty=True)
        print(Path(args.out, f"{plan.name}.md").read_text())
        return 0
    options.set_threads(args.threads)
    with session() as ctx:  # under torchrun: every cell trains on all processes
        summary = run_study(
            plan,
            args.out,
            progress=not args.no_progress,
            main_process=ctx.is_main,
            agree=(lambda value: from_main(value, ctx)) if ctx.active else None,
        )
    if summary is None:
        return 0
    print()
    print(Path(args.out, f"{plan.name}.md").read_text())
    return 0 if summary["rows"] else 1
