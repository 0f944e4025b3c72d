"""``n2nonnx prune``: prune a model, at initialization, learned (SCL) or structured (SNACS)."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options
from n2nonnx.cli.skip_options import add_skip_options, skip_options
from n2nonnx.pipeline.methods import PRUNE_METHODS, method_kind
from n2nonnx.pruning.options import AT_INIT_METHODS, PruneOptions
from n2nonnx.scl.options import SclOptions
from n2nonnx.skip.options import SkipOptions
from n2nonnx.structured.options import StructuredOptions
from n2nonnx.training.config import TrainConfig

AT_INIT_FIELDS = ["allocation", "exclude", "first_last_density"]
CRITERION_FIELDS = ["temperature", "iterations", "rescale"]
SCL_FIELDS = ["scl_lambda", "search_fraction", "mask_init", "mask_lr", "normalisation", "device"]
STRUCTURED_FIELDS = [
    "prune_percent",
    "target_params",
    "groups",
    "samples_per_class",
    "phi",
    "estimator",
    "upper_limit",
    "rule",
    "protect",
    "align",
    "finetune_epochs",
]
#: SCL's epochs on this verb (the recipe's others are TrainConfig's)
SCL_RECIPE = TrainConfig(epochs=10)

DESCRIPTION = """\
Prune INPUT and write it with a mask per pruned weight (or, for structured methods, with
whole filters and neurons removed).

  at initialization  random (RP), expander (RP, equal fan-in per unit), magnitude,
                     snip (= csp), grasp, synflow: score once, keep --density of the
                     weights, allocated per layer by --allocation.
  learned            scl: trainable masks with an identity straight-through estimator,
                     learned on --data for --epochs (target --density, or free with
                     --scl-lambda).
  structured         snacs (adaptive connectivity scores on a trained model), l1-filter,
                     random-filter: remove --prune-percent of the filters / neurons (or
                     down to --target-params), then optionally fine-tune."""

EXAMPLE = """\
examples:
  n2nonnx prune dense.onnx -o pruned.onnx --method snip --density 0.05 --data mnist1d
  n2nonnx prune dense.onnx -o skip.onnx --method random --density 0.05 --n2nskip
  n2nonnx prune dense.onnx -o live.onnx --method snip --density 0.02 --data mnist1d --repair
  n2nonnx prune dense.onnx -o scl.onnx --method scl --density 0.05 --data mnist1d --epochs 10
  n2nonnx prune trained.onnx -o slim.onnx --method snacs --data mnist1d --prune-percent 50"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prune`` verb."""
    parser = options.add_verb(
        subparsers, "prune", "prune a model (at init, learned, structured)", DESCRIPTION, EXAMPLE
    )
    options.add_input(parser)
    options.add_output(parser, "where to write the pruned model")
    parser.add_argument(
        "--method",
        default=PruneOptions().method,
        choices=PRUNE_METHODS,
        help="pruning method (see above)",
    )
    parser.add_argument(
        "--density",
        type=options.fraction,
        metavar="D",
        help="fraction of the weights kept, e.g. 0.05 (skip weights included with --n2nskip)",
    )
    options.add_data(
        parser, help="data for data-driven methods (snip, grasp, scl, snacs): " + options.DATA_HELP
    )
    options.add_seed(parser)
    options.add_input_shape(parser)
    options.add_progress(parser)
    at_init = parser.add_argument_group("pruning at initialization")
    options.add_fields(at_init, PruneOptions, AT_INIT_FIELDS)
    at_init.add_argument(
        "--masks",
        metavar="FILE.npz",
        help="use these masks (keyed by weight name) instead of a method",
    )
    options.add_fields(at_init, PruneOptions, CRITERION_FIELDS)
    options.add_repair(at_init)
    learned = parser.add_argument_group(
        "learned (scl; the training recipe options below apply too)"
    )
    options.add_fields(learned, SclOptions, SCL_FIELDS)
    structured = parser.add_argument_group("structured (snacs, l1-filter, random-filter)")
    options.add_fields(structured, StructuredOptions, STRUCTURED_FIELDS)
    parser.add_argument(
        "--n2nskip",
        action="store_true",
        help="then add N2NSkip connections within the same budget (options below)",
    )
    add_skip_options(parser)
    options.add_training(
        parser,
        SCL_RECIPE,
        title="training recipe (scl; --batch-size is also the scoring batch of snip and grasp)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune ``args.input`` with ``args.method`` and save to ``args.output``."""
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.paths import check_output_file

    check_output_file(
        args.output, label="-o", force=args.force, inputs=[args.input], suffixes=(".onnx",)
    )
    kind = method_kind(args.method)
    if args.repair and kind != "at_init":
        raise InvalidArgumentError(
            f"--repair moves the weights of a model pruned at initialization; --method "
            f"{args.method} does not keep a mask to repair: drop --repair or use an "
            f"at-initialization method ({', '.join(AT_INIT_METHODS)})"
        )
    if kind != "at_init" and args.masks is not None:
        raise InvalidArgumentError(
            f"--masks gives the masks of a model pruned at initialization; --method {args.method} "
            "makes its own: drop --masks or --method"
        )
    if kind == "structured" and args.n2nskip:
        raise InvalidArgumentError(
            f"--method {args.method} removes whole units; --n2nskip adds skip connections to a "
            "model pruned at initialization or learned (scl): drop one of them"
        )
    if kind == "structured":
        return _structured(args)
    free_with_density = args.scl_lambda is not None and args.density is not None
    if kind == "learned" and free_with_density and not args.n2nskip:
        raise InvalidArgumentError(
            "--scl-lambda (free mode) learns the density; --density (target mode) steers "
            "lambda to reach it: drop one of them (with --n2nskip, --density sizes the skip "
            "layers)"
        )
    if (
        args.density is None
        and args.masks is None
        and not (kind == "learned" and args.scl_lambda is not None)
    ):
        raise InvalidArgumentError(f"--method {args.method} needs --density (e.g. --density 0.05)")
    skip = skip_options(args) if args.n2nskip else None
    if kind == "learned":
        return _learned(args, skip)
    return _at_init(args, skip)


def _at_init(args: argparse.Namespace, skip: SkipOptions | None) -> int:
    from n2nonnx.io import load, save
    from n2nonnx.pipeline.methods import prune_model
    from n2nonnx.pruning import format_prune_table, prune_table

    model = load(args.input, options.parse_input_shapes(args.input_shape))
    pruned = prune_model(
        model,
        args.method,
        args.density,
        data=args.data,
        seed=args.seed,
        masks=args.masks,
        skip=skip,
        progress=not args.no_progress,
        batch_size=args.batch_size,
        repair=args.repair,
        **{name: getattr(args, name) for name in AT_INIT_FIELDS + ["rescale"]},
        options={"temperature": args.temperature, "iterations": args.iterations},
    ).model
    path = save(pruned, args.output)
    print(format_prune_table(prune_table(pruned)))
    options.print_repairs(pruned, (1 + bool(skip)) if args.repair else 0)
    print(f"\nwrote {path}")
    return 0


def _learned(args: argparse.Namespace, skip: SkipOptions | None) -> int:
    from n2nonnx.io import load, save
    from n2nonnx.pipeline.methods import prune_model
    from n2nonnx.pruning import format_prune_table, prune_table

    recipe = TrainConfig.from_options(**options.training_options(args))  # validated before the work
    model = load(args.input, options.parse_input_shapes(args.input_shape))
    # free mode learns the density; a --density beside it only sizes the N2NSkip layers
    density = args.density if args.scl_lambda is None or skip is not None else None
    result = prune_model(
        model,
        "scl",
        density,
        data=args.data,
        seed=args.seed,
        skip=skip,
        recipe=recipe,
        progress=not args.no_progress,
        exclude=args.exclude,
        **{name: getattr(args, name) for name in SCL_FIELDS},
    ).details
    path = save(result.model, args.output)
    print(format_prune_table(prune_table(result.model, [layer.weight for layer in result.layers])))
    split = result.skip_split
    print(
        f"\nSCL: density {result.density:.4%} (the search reached {result.learned_density:.4%}); "
        f"{split['sequential_nonzeros']:,} sequential + {split['skip_nonzeros']:,} skip non-zeros; "
        f"final test accuracy {result.history.final.test_accuracy:.2%}\nwrote {path}"
    )
    return 0


def _structured(args: argparse.Namespace) -> int:
    from n2nonnx.io import load, save
    from n2nonnx.pipeline.methods import prune_model

    model = load(args.input, options.parse_input_shapes(args.input_shape))
    result = prune_model(
        model,
        args.method,
        data=args.data,
        seed=args.seed,
        progress=not args.no_progress,
        **{name: getattr(args, name) for name in STRUCTURED_FIELDS},
    ).details
    path = save(result.model, args.output)
    print(
        f"{result.method}: removed {sum(map(len, result.removed.values()))} units in "
        f"{len(result.removed)} layers; parameters kept {result.params_kept:.1%}, FLOPs kept "
        f"{result.flops_kept:.1%}; decided in {result.decision_seconds:.1f} s"
    )
    if result.finetune is not None:
        print(
            f"fine-tuned {len(result.finetune.history)} epochs: test accuracy "
            f"{result.finetune.history.final.test_accuracy:.2%}"
        )
    print(f"\nwrote {path}")
    return 0
