"""``n2nonnx study``: the N2NSkip paper's comparison at CPU scale, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from n2nonnx.cli.run import add_recipe_options, recipe_from

# The default size finishes in about 15 minutes on 2 cores; --full is the README's study.
QUICK = {"archs": ["mlp"], "seeds": [0, 1], "epochs": 10}
FULL = {"archs": ["mlp", "vgg1d"], "seeds": [0, 1, 2], "epochs": 15}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="dense vs RP, N2NSkip-RP, CSP, N2NSkip-CSP over densities and seeds (resumable)",
        description="Train every variant at every density and seed with the same recipe, keep each "
        "finished run under OUT/cells (an interrupted study resumes), and write OUT/results.md "
        "(mean +- std), OUT/results.json and plots. The default size finishes in about 15 minutes "
        "on 2 cores; --full runs the README's study (both architectures, 3 seeds, 15 epochs).",
    )
    parser.add_argument("--out", default="runs/study", help="study folder (default: runs/study)")
    parser.add_argument("--full", action="store_true", help="the full study (README numbers)")
    parser.add_argument("--arch", nargs="+", help="mlp and/or vgg1d")
    parser.add_argument("--variants", nargs="+", help="dense RP N2NSkip-RP CSP N2NSkip-CSP")
    parser.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.05, 0.02])
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--data", default="mnist1d")
    parser.add_argument("--sampling", default="block", help="N2NSkip sampling: block or uniform")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's choice; 1 is fastest on a busy machine)")
    from n2nonnx.study import STUDY_RECIPE

    parser.add_argument("--no-rescale", action="store_true", help="keep the kept weights' dense-init scale")
    add_recipe_options(parser, STUDY_RECIPE)
    parser.set_defaults(func=run, epochs=None)


def run(args: argparse.Namespace) -> int:
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.pipeline import JobConfig, validate
    from n2nonnx.study import VARIANTS, StudyPlan, run_study

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise InvalidArgumentError(f"--threads must be at least 1, got {args.threads}")

        torch.set_num_threads(args.threads)
    size = FULL if args.full else QUICK
    if args.epochs is None:
        args.epochs = size["epochs"]
    if any(not 0 < d <= 1 for d in args.densities):
        raise InvalidArgumentError(f"densities must be in (0, 1], got {args.densities}")
    plan = StudyPlan(
        archs=args.arch or size["archs"], variants=args.variants or list(VARIANTS),
        densities=args.densities, seeds=args.seeds if args.seeds is not None else size["seeds"],
        data=args.data, recipe=recipe_from(args), sampling=args.sampling, rescale=not args.no_rescale,
    )
    plan.cells()  # unknown architectures or variants fail here, before any work
    validate(JobConfig(method="random", density=1.0, sampling=plan.sampling, recipe=plan.recipe))
    summary = run_study(plan, args.out, progress=not args.no_progress)
    print()
    print(Path(args.out, "results.md").read_text())
    return 0 if summary["rows"] else 2
