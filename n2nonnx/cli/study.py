"""``n2nonnx study``: the N2NSkip paper's comparison at CPU scale, resumable."""

from __future__ import annotations

import argparse
from typing import TypedDict

from n2nonnx.cli import options


class StudySize(TypedDict):
    """The defaults of one study size: architectures, seeds and epochs per run."""

    archs: list[str]
    seeds: list[int]
    epochs: int


# The default size finishes in about 15 minutes on 2 cores; --full is the README's study.
QUICK: StudySize = {"archs": ["mlp"], "seeds": [0, 1], "epochs": 10}
FULL: StudySize = {"archs": ["mlp", "vgg1d"], "seeds": [0, 1, 2], "epochs": 15}
VARIANTS = ("dense", "RP", "N2NSkip-RP", "CSP", "N2NSkip-CSP", "SCL", "N2NSkip-SCL")
DEFAULT_VARIANTS = VARIANTS[:5]

DESCRIPTION = """\
Train every variant at every density and seed with the same recipe, keep each finished run
under OUT/cells (an interrupted study resumes; a cell run under other settings is redone),
and write OUT/results.md (mean +- std), OUT/results.json and plots. The default size
finishes in about 15 minutes on 2 cores with --threads 1; --full runs the README's study
(both architectures, 3 seeds, 15 epochs)."""

EXAMPLE = """\
examples:
  n2nonnx study --out runs/study --threads 1
  n2nonnx study --full --out runs/study --threads 1"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` verb."""
    parser = options.add_verb(
        subparsers, "study", "the N2NSkip comparison over densities and seeds", DESCRIPTION, EXAMPLE
    )
    options.add_out_dir(parser, "runs/study")
    parser.add_argument("--full", action="store_true", help="the full study (the README's numbers)")
    parser.add_argument(
        "--arch", nargs="+", choices=("mlp", "vgg1d"), help="architectures (default by size)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="variants (default: the paper's five; SCL and N2NSkip-SCL on request)",
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
        "--sampling", default="block", choices=("block", "uniform"), help="N2NSkip sampling"
    )
    parser.add_argument(
        "--no-rescale", action="store_true", help="keep the kept weights' dense-init scale"
    )
    options.add_threads(parser)
    options.add_progress(parser)
    options.add_training(parser)
    parser.set_defaults(func=run, epochs=None)


def run(args: argparse.Namespace) -> int:
    """Run the missing cells and print the summary table."""
    from pathlib import Path

    from n2nonnx.study import StudyPlan, run_study
    from n2nonnx.training import TrainConfig
    from n2nonnx.training.distributed import from_main, session

    size = FULL if args.full else QUICK
    if args.epochs is None:
        args.epochs = size["epochs"]
    recipe = options.training_options(args)
    TrainConfig.from_options(**recipe)  # validated before any work
    plan = StudyPlan(
        archs=args.arch or size["archs"],
        variants=args.variants or list(DEFAULT_VARIANTS),
        densities=args.densities,
        seeds=args.seeds if args.seeds is not None else size["seeds"],
        data=args.data,
        recipe=recipe,
        sampling=args.sampling,
        rescale=not args.no_rescale,
    )
    plan.cells()  # unknown architectures or variants fail here, before any work
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
    print(Path(args.out, "results.md").read_text())
    return 0 if summary["rows"] else 1
