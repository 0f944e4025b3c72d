"""``n2nonnx train``: train an ONNX model on a data set and save the trained copy."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options

DESCRIPTION = """\
Train the ONNX model's own graph with the PyTorch backend and write a copy holding the
trained values in the same initializers (masked weights stay exactly zero; BatchNorm
running statistics are written back). The input file is never modified.

Built-in data is reshaped to the model input's rank ((N, 40) or (N, 1, 40) for mnist1d)."""

EXAMPLE = """\
example:
  n2nonnx train in.onnx -o out.onnx --data mnist1d --epochs 20 --optimizer sgd \\
      --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --schedule cosine --seed 0"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = options.add_verb(
        subparsers, "train", "train an ONNX model and save the trained copy", DESCRIPTION, EXAMPLE
    )
    options.add_input(parser, "the ONNX model to train (never modified)")
    options.add_output(parser, "where to write the trained model")
    options.add_data(parser, required=True)
    options.add_seed(parser, "seed of shuffling, dropout and every RNG")
    options.add_training(parser)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    options.add_sync_bn(parser)
    parser.add_argument(
        "--history", metavar="FILE.json", help="also write the per-epoch history as JSON"
    )
    options.add_threads(parser)
    options.add_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train ``args.input`` on ``args.data`` and save the result to ``args.output``."""
    from n2nonnx import io
    from n2nonnx.data import model_input, resolve_data
    from n2nonnx.deployment.checks import check_opens
    from n2nonnx.paths import check_output_file
    from n2nonnx.training import TrainConfig, train
    from n2nonnx.training.distributed import all_or_none, check_same_options, session

    with session(_session_device(args.device)) as ctx:  # under torchrun: one group for the command
        with all_or_none(ctx):  # an option only one process got wrong stops them all
            config = TrainConfig.from_options(
                **options.training_options(args)
            )  # validated before slow work
            _check_device(args.device)
        check_same_options(ctx, {k: v for k, v in vars(args).items() if k != "func"})
        with all_or_none(ctx):  # a check that fails on one process stops them all
            check_output_file(
                args.output, label="-o", force=args.force, inputs=[args.input], suffixes=(".onnx",)
            )
            if args.history:
                check_output_file(
                    args.history,
                    label="--history",
                    force=args.force,
                    inputs=[args.input, args.output],
                    suffixes=(".json",),
                )
            options.set_threads(args.threads)
            model = io.load(args.input, analyze=False)
            check_opens(model)  # the trained copy is saved only where onnxruntime opens it
            spec = model_input(model)
            data = resolve_data(args.data, input_shape=spec.shape, input_name=spec.name)
        if ctx.is_main:
            print(f"training {args.input} on {data.describe()}", flush=True)
        result = train(
            model,
            data,
            config,
            device=args.device,
            progress=not args.no_progress,
            sync_bn=args.sync_bn,
        )
        if not ctx.is_main:
            return 0  # only the first process writes and reports
    io.save(result.model, args.output)
    if args.history:
        result.history.save_json(args.history)
    best = result.history.best()
    print(
        f"final test accuracy {result.history.final.test_accuracy:.2%} "
        f"(best {best.test_accuracy:.2%} at epoch {best.epoch})"
    )
    print(f"wrote {args.output}" + (f" and {args.history}" if args.history else ""))
    return 0


def _session_device(name: str) -> str:
    """The device that picks the process group's backend: ``cpu`` for one refused later."""
    try:
        _check_device(name)
    except Exception:  # noqa: BLE001 - refused with its message inside the group
        return "cpu"
    return name


def _check_device(name: str) -> None:
    """Refuse a device that is unknown, absent, or holds no data (``meta``) before any work."""
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.training.devices import resolve_device

    device = resolve_device(name)
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise InvalidArgumentError(
            f"--device {name!r} cannot train (it holds no data or is not supported); "
            "use cpu or cuda"
        )
