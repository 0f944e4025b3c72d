"""The ``n2nonnx train`` verb: train an ONNX model on a data set and save the trained copy."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from n2nonnx.data import builtin_names, model_input, resolve_data
from n2nonnx.errors import InvalidArgumentError

DESCRIPTION = """\
Train the ONNX model's own graph with the PyTorch backend and write a copy holding the
trained values in the same initializers (masked weights stay exactly zero; BatchNorm
running statistics are written back). The input file is never modified.

DATA is a built-in data set ({builtins}; options after a colon, e.g.
'synthetic:features=32,classes=10'), or an .npz file with the arrays x_train, y_train,
x_test, y_test. Built-in data is reshaped to the model input's rank ((N, 40) or
(N, 1, 40) for mnist1d)."""

EXAMPLE = """\
example:
  n2nonnx train in.onnx -o out.onnx --data mnist1d --epochs 20 --optimizer sgd \\
      --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --schedule cosine --seed 0"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command.

    Args:
        subparsers: the CLI's sub-parser collection.
    """
    parser = subparsers.add_parser(
        "train",
        help="train an ONNX model (masked weights stay zero) and save the trained copy",
        description=DESCRIPTION.format(builtins=", ".join(builtin_names())),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="the ONNX model to train (not modified)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="where to write the trained model"
    )
    parser.add_argument(
        "--data", required=True, metavar="DATA", help="built-in data set name or .npz path"
    )
    parser.add_argument(
        "--epochs", type=int, metavar="N", default=10, help="passes over the data (default 10)"
    )
    parser.add_argument(
        "--batch-size", type=int, metavar="N", default=128, help="samples per step (default 128)"
    )
    parser.add_argument(
        "--optimizer", default="sgd", metavar="NAME", help="sgd, adam or adamw (default sgd)"
    )
    parser.add_argument(
        "--lr", type=float, metavar="RATE", default=0.05, help="learning rate (default 0.05)"
    )
    parser.add_argument(
        "--momentum", type=float, metavar="M", default=0.9, help="SGD momentum (default 0.9)"
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        metavar="W",
        default=0.0,
        help="L2 / decoupled weight decay (default 0)",
    )
    parser.add_argument(
        "--schedule",
        default="none",
        metavar="NAME",
        help="none, cosine, step or onecycle (default none)",
    )
    parser.add_argument(
        "--step-size",
        type=int,
        metavar="EPOCHS",
        default=0,
        help="epochs between 'step' decays (default epochs/3)",
    )
    parser.add_argument(
        "--gamma",
        type=float,
        metavar="FACTOR",
        default=0.1,
        help="'step' decay factor (default 0.1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=0,
        help="seed of shuffling, dropout and RNGs (default 0)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)"
    )
    parser.add_argument(
        "--history", metavar="PATH", help="write the per-epoch history as JSON to this path"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train ``args.input`` on ``args.data`` and save the result to ``args.output``.

    Args:
        args: the parsed command line (see :func:`register`).

    Returns:
        0 on success. User errors raise :class:`~n2nonnx.errors.N2NError`.
    """
    from n2nonnx import io
    from n2nonnx.backend.trainer import TrainConfig, train

    source, target = Path(args.input), Path(args.output)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise InvalidArgumentError(
            f"--output {str(target)!r} is the input file; n2nonnx never modifies its input, "
            f"choose another output path"
        )
    if args.history and (not Path(args.history).resolve().parent.is_dir() or Path(args.history).is_dir()):
        raise InvalidArgumentError(f"--history {args.history!r}: its folder does not exist, or it is a folder")
    if not target.resolve().parent.is_dir() or target.is_dir():
        raise InvalidArgumentError(f"--output {str(target)!r}: its folder does not exist, or it is a folder")
    schedule = None if args.schedule.lower() == "none" else args.schedule.lower()
    config = TrainConfig(  # validated before any slow work
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer.lower(),
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=schedule,
        step_size=args.step_size,
        gamma=args.gamma,
        seed=args.seed,
    )
    model = io.load(source, analyze=False)
    model_in = model_input(model)
    data = resolve_data(args.data, input_shape=model_in.shape, input_name=model_in.name)
    print(f"training {source.name} on {data.describe()}", flush=True)
    result = train(
        model,
        data,
        **asdict(config),
        device=args.device,
        progress=not args.no_progress,
        on_epoch=lambda record: print(record.summary(config.epochs), flush=True),
    )
    io.save(result.model, target)
    if args.history:
        result.history.save_json(args.history)
    best = result.history.best()
    print(
        f"final test accuracy {result.history.final.test_accuracy:.2%} "
        f"(best {best.test_accuracy:.2%} at epoch {best.epoch})"
    )
    print(f"wrote {target}" + (f" and {args.history}" if args.history else ""))
    return 0
