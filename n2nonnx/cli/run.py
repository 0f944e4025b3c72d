"""``n2nonnx run``: the main job, from an exported model and data to a trained sparse model and a report."""

from __future__ import annotations

import argparse

from n2nonnx.pipeline import RECIPE_DEFAULTS


def add_recipe_options(parser: argparse.ArgumentParser, defaults: dict = RECIPE_DEFAULTS) -> None:
    """The training-recipe options shared by ``run`` and ``study``."""
    recipe = parser.add_argument_group("training recipe")
    recipe.add_argument("--epochs", type=int, default=defaults["epochs"])
    recipe.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    recipe.add_argument("--optimizer", default=defaults["optimizer"], help="sgd, adam or adamw")
    recipe.add_argument("--lr", type=float, default=defaults["lr"])
    recipe.add_argument("--momentum", type=float, default=defaults["momentum"])
    recipe.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    recipe.add_argument("--schedule", default=defaults["schedule"], help="cosine, step, onecycle or none")


def recipe_from(args: argparse.Namespace) -> dict:
    return {
        "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
        "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
        "schedule": None if args.schedule in (None, "none") else args.schedule,
    }


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job: prune + N2NSkip + train + check + report (built-in default without a model)",
        description="Prune MODEL at initialization, add N2NSkip connections within the same budget, "
        "train it, check the saved model in onnxruntime, measure its heat-diffusion connectivity "
        "against the dense graph, and write a report folder (report.md, results.json, figures, "
        "model.onnx). Without MODEL: the built-in MLP (defined in PyTorch, exported through "
        "converters/) on MNIST-1D.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx classifier (default: the built-in model)")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "vgg1d"],
                        help="built-in architecture when no model is given (default: mlp)")
    parser.add_argument("--data", default="mnist1d",
                        help="mnist1d, digits, synthetic, or an .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--method", default="snip", help="pruning method, or 'dense' (default: snip)")
    parser.add_argument("--density", type=float, default=0.05, help="non-zero fraction, skips included (default 0.05)")
    parser.add_argument("--skip-share", type=float, default=0.2,
                        help="share of the budget on N2NSkip connections; 0 for none (default 0.2: "
                        "0.5, the paper's, lost 3-20 points to no skips in the README's study)")
    parser.add_argument("--join", choices=("preact", "activation"), default="preact",
                        help="add the skip before the target's BatchNorm (default; ~6 points better on the "
                        "CNN in the study) or after it")
    parser.add_argument("--allocation", default="erk", help="global, uniform or erk (default: erk)")
    parser.add_argument("--sampling", default="block", help="N2NSkip sampling: block or uniform (default: block)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/default", help="report folder (default: runs/default)")
    parser.add_argument("--no-rescale", action="store_true",
                        help="keep the kept weights' dense-init scale (default: fan-in-corrected)")
    parser.add_argument("--no-connectivity", action="store_true", help="skip the heat-diffusion analysis")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_recipe_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from n2nonnx.pipeline import JobConfig, run_job

    config = JobConfig(
        method=args.method, density=args.density, skip_share=args.skip_share,
        allocation=args.allocation, sampling=args.sampling, recipe=recipe_from(args),
        seed=args.seed, rescale=not args.no_rescale, connectivity=not args.no_connectivity,
        skip_options={"join": args.join},
    )
    result = run_job(args.model, args.data, config, args.out, arch=args.arch, progress=not args.no_progress)
    numbers = result.numbers
    print(f"{numbers['label']}: density {numbers['density']:.2%}, test accuracy "
          f"{numbers['onnxruntime_test_accuracy']:.2%} (onnxruntime)"
          + (f", delta {numbers['connectivity']['saturation_delta']:.3g}" if "connectivity" in numbers else ""))
    return 0
