"""``n2nonnx prune``: prune a model, at initialization, learned (SCL) or structured (SNACS)."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options
from n2nonnx.cli.skip_options import add_skip_options, skip_kwargs
from n2nonnx.training.config import TrainConfig

AT_INIT = options.AT_INIT_METHODS
LEARNED = ("scl",)
STRUCTURED = ("snacs", "l1-filter", "random-filter")

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
        default="snip",
        choices=AT_INIT + LEARNED + STRUCTURED,
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
    at_init.add_argument(
        "--allocation",
        choices=options.ALLOCATIONS,
        default="global",
        help="how the budget is split over layers",
    )
    at_init.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave layers matching a name / glob / regex dense (repeatable)",
    )
    at_init.add_argument(
        "--first-last-density",
        type=options.fraction,
        metavar="D",
        help="keep the first and last layers at this density",
    )
    at_init.add_argument(
        "--masks",
        metavar="FILE.npz",
        help="use these masks (keyed by weight name) instead of a method",
    )
    at_init.add_argument(
        "--temperature", type=float, default=200.0, metavar="T", help="GraSP logit temperature"
    )
    at_init.add_argument(
        "--iterations", type=options.positive_int, default=100, metavar="N", help="SynFlow rounds"
    )
    at_init.add_argument(
        "--rescale",
        action="store_true",
        help="scale each unit's kept weights by sqrt(fan-in / kept fan-in)",
    )
    options.add_repair(at_init)
    learned = parser.add_argument_group(
        "learned (scl; the training recipe options below apply too)"
    )
    learned.add_argument(
        "--scl-lambda",
        type=float,
        metavar="L",
        help="free mode: the regulariser weight; the density is what is learned "
        "(instead of --density)",
    )
    learned.add_argument(
        "--search-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of the epochs spent learning masks; the rest trains with them frozen",
    )
    learned.add_argument(
        "--mask-init",
        type=float,
        default=0.05,
        metavar="M",
        help="initial value of every mask variable (> 0: every connection starts on)",
    )
    learned.add_argument(
        "--mask-lr",
        type=float,
        default=0.005,
        metavar="RATE",
        help="SGD rate of the mask variables",
    )
    learned.add_argument(
        "--normalisation",
        choices=("rms", "norm"),
        default="rms",
        help="per-unit normalisation of the mask gradient",
    )
    learned.add_argument("--device", default="cpu", help="torch device of SCL's training")
    structured = parser.add_argument_group("structured (snacs, l1-filter, random-filter)")
    structured.add_argument(
        "--prune-percent",
        type=float,
        metavar="P",
        help="percent of the model's parameters removed, 0 < P < 100",
    )
    structured.add_argument(
        "--target-params",
        type=float,
        metavar="F",
        help="or: fraction of the parameters kept, 0 < F < 1",
    )
    structured.add_argument(
        "--groups",
        type=options.positive_int,
        default=8,
        metavar="N",
        help="SNACS groups of units per layer",
    )
    structured.add_argument(
        "--samples-per-class",
        type=options.positive_int,
        default=250,
        metavar="N",
        help="samples per class the activations are collected on",
    )
    structured.add_argument(
        "--phi",
        choices=("w", "w2", "exp"),
        default="w",
        help="weight scaling of connection scores: w, w^2 or exp(-w^2/2)",
    )
    structured.add_argument(
        "--estimator",
        choices=("edge", "knn", "binned"),
        default="edge",
        help="conditional mutual information estimator",
    )
    structured.add_argument(
        "--upper-limit",
        default="lstsq",
        metavar="{lstsq,svm,FRACTION}",
        help="per-layer pruning limit: classifier sweep (least squares or linear SVM) "
        "or a fixed fraction",
    )
    structured.add_argument(
        "--limit-rule",
        type=float,
        default=0.7,
        metavar="R",
        help="limit = largest share with accuracy >= max - R (max - min)",
    )
    structured.add_argument(
        "--protect",
        type=float,
        default=0.75,
        metavar="F",
        help="share of each layer's most sensitive units never removed (0 disables; "
        "at 0.75 SNACS removes at most about 25-35%% of the parameters)",
    )
    structured.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        metavar="N",
        help="fine-tune the slimmed model on --data for N epochs",
    )
    parser.add_argument(
        "--n2nskip",
        action="store_true",
        help="then add N2NSkip connections within the same budget (options below)",
    )
    add_skip_options(parser)
    options.add_training(
        parser,
        TrainConfig(epochs=10),
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
    if args.repair and args.method not in AT_INIT:
        raise InvalidArgumentError(
            f"--repair moves the weights of a model pruned at initialization; --method "
            f"{args.method} does not keep a mask to repair: drop --repair or use an "
            f"at-initialization method ({', '.join(AT_INIT)})"
        )
    if args.method in STRUCTURED:
        return _structured(args)
    if (
        args.density is None
        and args.masks is None
        and not (args.method in LEARNED and args.scl_lambda is not None)
    ):
        raise InvalidArgumentError(f"--method {args.method} needs --density (e.g. --density 0.05)")
    skip = skip_kwargs(args) if args.n2nskip else None
    if args.method in LEARNED:
        return _learned(args, skip)
    return _at_init(args, skip)


def _at_init(args: argparse.Namespace, skip: dict | None) -> int:
    from n2nonnx.io import load, save
    from n2nonnx.pruning import format_prune_table, prune, prune_table

    model = load(args.input, options.parse_input_shapes(args.input_shape))
    density = args.density or 1.0
    sequential = density
    if skip:
        from n2nonnx.skip import sequential_density

        pair_options = {key: skip[key] for key in ("pairs", "per_target", "kernel", "pool")}
        sequential = sequential_density(model, density, skip["skip_share"], **pair_options)
    pruned = prune(
        model,
        args.method if args.masks is None else "masks",
        sequential,
        allocation=args.allocation,
        data=args.data,
        batch_size=args.batch_size,
        seed=args.seed,
        exclude=args.exclude,
        first_last_density=args.first_last_density,
        masks=args.masks,
        options={"temperature": args.temperature, "iterations": args.iterations},
        rescale=args.rescale,
        progress=not args.no_progress,
        repair=args.repair,
    )
    if skip:
        from n2nonnx.skip import add_n2nskip

        pruned = add_n2nskip(pruned, density=density, **skip)
        if args.repair:  # again: the skips' sources and the trimmed sequential weights
            from n2nonnx.connectivity.repair import repair_dead_weights

            pruned = repair_dead_weights(pruned, seed=args.seed)
    path = save(pruned, args.output)
    print(format_prune_table(prune_table(pruned)))
    options.print_repairs(pruned, (1 + bool(skip)) if args.repair else 0)
    print(f"\nwrote {path}")
    return 0


def _learned(args: argparse.Namespace, skip: dict | None) -> int:
    from n2nonnx.io import load, save
    from n2nonnx.pruning import format_prune_table, prune_table
    from n2nonnx.scl import learn_masks
    from n2nonnx.scl.variants import n2nskip_candidates

    recipe = TrainConfig.from_options(**options.training_options(args))  # validated before the work
    model = load(args.input, options.parse_input_shapes(args.input_shape))
    if skip:
        model = n2nskip_candidates(model, density=args.density, **skip)
    density = None if args.scl_lambda is not None else args.density
    result = learn_masks(
        model,
        args.data,
        density=density,
        scl_lambda=args.scl_lambda,
        recipe=recipe,
        search_fraction=args.search_fraction,
        mask_init=args.mask_init,
        mask_lr=args.mask_lr,
        normalisation=args.normalisation,
        exclude=args.exclude,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
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
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.io import load, save
    from n2nonnx.structured import prune_structured

    model = load(args.input, options.parse_input_shapes(args.input_shape))
    limit: str | float = args.upper_limit
    if limit not in ("lstsq", "svm"):
        try:
            limit = float(limit)
        except ValueError:
            raise InvalidArgumentError(
                f"--upper-limit {limit!r} is not lstsq, svm or a fraction"
            ) from None
    result = prune_structured(
        model,
        args.method.removesuffix("-filter"),
        data=args.data,
        prune_percent=args.prune_percent,
        target_params=args.target_params,
        groups=args.groups,
        samples_per_class=args.samples_per_class,
        phi=args.phi,
        estimator=args.estimator,
        upper_limit=limit,
        rule=args.limit_rule,
        protect=args.protect,
        seed=args.seed,
        progress=not args.no_progress,
        finetune_epochs=args.finetune_epochs,
    )
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
