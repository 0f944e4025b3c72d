"""``n2nonnx run``: the main job, from an exported model and data to a deployed sparse model and a report."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options
from n2nonnx.cli.deploy import TARGET_NAMES
from n2nonnx.cli.skip_options import add_skip_options, skip_kwargs
from n2nonnx.pipeline.methods import LEARNED_METHODS
from n2nonnx.pipeline.verdict import DEPLOY_CHOICES
from n2nonnx.pruning.options import ALLOCATIONS, AT_INIT_METHODS
from n2nonnx.skip.options import SkipOptions

#: run's own N2NSkip defaults (the study's choice; ``n2nonnx skip`` keeps the paper's)
RUN_SKIP_DEFAULTS = SkipOptions(skip_share=0.2, join="preact")

DESCRIPTION = """\
Prune INPUT at initialization, add N2NSkip connections within the same budget, train it,
check the saved model in onnxruntime, measure its heat-diffusion connectivity against the
dense graph, deploy it, and write a report folder (report.md, results.json, figures,
model.onnx, deployed.onnx). The report opens with a verdict and compares the dense model,
the same density without skips and the N2NSkip model, all trained with the same recipe on
the training split less a validation part held out with the seed, and deployed (accuracy,
non-zeros, file size, onnxruntime latency at batch 1 and 64). deployed.onnx is the sparse
model with the best validation accuracy (--deploy n2nskip|pruned: that one), shown
deployed to every target whose runtime is installed (--targets: onnxruntime, ort-mobile,
tensorrt with a TensorRT-enabled onnxruntime, mnn), each file written as deployed.<suffix>,
side by side: size, latency at batch 1 and 64 in the target's runtime, agreement with the
input model, the fastest named. Without INPUT: the built-in MLP (or --arch vgg1d) on MNIST-1D.

The defaults (skip share 0.2, skips joined before the target's BatchNorm, ERK allocation,
Adam) come from the study in the README; `n2nonnx skip` keeps the paper's share 0.5."""

EXAMPLE = """\
examples:
  n2nonnx run                                    # built-in MLP on MNIST-1D, 5% density
  n2nonnx run model.onnx --data data.npz --density 0.02 --out runs/mine
  n2nonnx run --arch vgg1d --method random --epochs 10 --no-baselines
  n2nonnx run --repair --out runs/repaired        # no kept weight on a dead path
  n2nonnx run --targets onnxruntime mnn           # deploy for those targets only
  n2nonnx run --deploy pruned                     # deployed.onnx: the model without skips"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` verb."""
    parser = options.add_verb(
        subparsers,
        "run",
        "the main job: prune + N2NSkip + train + deploy + report",
        DESCRIPTION,
        EXAMPLE,
    )
    parser.add_argument(
        "input",
        nargs="?",
        metavar="INPUT.onnx",
        help="an ONNX classifier (default: the built-in model; never modified)",
    )
    parser.add_argument(
        "--arch",
        default="mlp",
        choices=("mlp", "vgg1d"),
        help="built-in architecture when no model is given",
    )
    options.add_data(parser, default="mnist1d")
    parser.add_argument(
        "--method",
        default="snip",
        choices=AT_INIT_METHODS + LEARNED_METHODS + ("dense",),
        help="pruning method (scl: masks learned during the recipe), or dense",
    )
    parser.add_argument(
        "--density",
        type=options.fraction,
        default=0.05,
        metavar="D",
        help="non-zero fraction, skips included",
    )
    parser.add_argument(
        "--allocation",
        default="erk",
        choices=ALLOCATIONS,
        help="how the sequential budget is split over layers",
    )
    parser.add_argument(
        "--no-rescale",
        action="store_true",
        help="keep the kept weights' dense-init scale (default: fan-in-corrected)",
    )
    options.add_repair(parser)
    options.add_seed(parser)
    options.add_out_dir(parser, "runs/default")
    options.add_force(parser)
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="do not train the dense and no-skip baselines (large models)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="do not deploy and time the models"
    )
    parser.add_argument(
        "--deploy",
        default="best",
        choices=DEPLOY_CHOICES,
        help="which model deployed.onnx is: best (the sparse model with the highest accuracy "
        "on a validation part of the training split; default), n2nskip or pruned (the same "
        "density without skips)",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGET_NAMES,
        metavar="NAME",
        help=f"deployment targets to deploy the model to and time ({', '.join(TARGET_NAMES)}; "
        "default: every one whose runtime is installed; onnxruntime alone: deployed.onnx only)",
    )
    parser.add_argument(
        "--no-connectivity", action="store_true", help="skip the heat-diffusion analysis"
    )
    options.add_threads(parser)
    options.add_progress(parser)
    add_skip_options(parser, RUN_SKIP_DEFAULTS)
    options.add_training(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job and print its headline numbers."""
    from n2nonnx.connectivity.repair import RepairRecord
    from n2nonnx.pipeline import JobConfig, run_job
    from n2nonnx.training.distributed import session

    skip = skip_kwargs(args)
    seed = skip.pop("seed")
    config = JobConfig(
        method=args.method,
        density=args.density,
        skip_share=skip.pop("skip_share"),
        allocation=args.allocation,
        sampling=skip.pop("sampling"),
        recipe=options.training_options(args),
        seed=seed,
        rescale=not args.no_rescale,
        connectivity=not args.no_connectivity,
        skip_options=skip,
        repair=args.repair,
    )
    options.set_threads(args.threads)
    with session() as ctx:  # under torchrun: every training of the job is distributed
        job = run_job(
            args.input,
            args.data,
            config,
            args.out,
            arch=args.arch,
            baselines=not args.no_baselines,
            deploy=not args.no_deploy,
            deploy_choice=args.deploy,
            force=args.force,
            progress=not args.no_progress,
            main_process=ctx.is_main,
            targets=args.targets,
        )
        if not ctx.is_main:
            return 0
    numbers = job.result.numbers
    print(
        f"{numbers['label']}: density {numbers['density']:.2%}, test accuracy "
        f"{numbers['onnxruntime_test_accuracy']:.2%} (onnxruntime)"
        + (
            f", delta {numbers['connectivity']['saturation_delta']:.3g}"
            if "connectivity" in numbers
            else ""
        )
    )
    for record in numbers.get("repair", []):
        print("  " + RepairRecord.from_dict(record).summary())
    for label, row in job.gains.items():
        print(
            f"  {label:14s} accuracy {row['test_accuracy']:.2%}  non-zeros {row['nonzeros']:>8,}  "
            f"deployed {row['deployed_bytes'] / 1024:8.1f} KiB  latency b=1 {row['latency_ms']['1']:.3f} ms  "
            f"b=64 {row['latency_ms']['64']:.3f} ms"
        )
    if "deployed" in numbers:
        print(f"  deployed.onnx: {numbers['deployed']['label']} ({numbers['deployed']['why']})")
    for name, row in job.targets.get("rows", {}).items():
        if row["status"] != "ok":
            print(f"  target {name:12s} {row['status']}: {row['reason']}")
            continue
        print(
            f"  target {name:12s} {row['file']:24s} {row['bytes'] / 1024:8.1f} KiB  latency b=1 "
            f"{row['latency_ms']['1']:.3f} ms  b=64 {row['latency_ms']['64']:.3f} ms"
        )
    print(f"report: {job.files['report']}")
    return 0
