"""Options shared by the verbs, defined once so they mean the same thing everywhere.

Conventions: the model a verb reads is the positional ``input``; a model it writes is
``-o/--output FILE``; a report folder is ``--out DIR``; ``--force`` lets any output replace
an existing file (an input is never replaced); ``--seed``, ``--data``, ``--input-shape``,
``--no-progress`` and the training recipe have one definition here. This module imports
nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from n2nonnx.errors import InvalidArgumentError

if TYPE_CHECKING:
    from n2nonnx.model import Model

DATA_HELP = (
    "a built-in data set (mnist1d, digits, synthetic; options after a colon, e.g. "
    "synthetic:features=32,classes=10) or an .npz file with x_train, y_train, x_test, y_test"
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions keep their line breaks; every option shows its default."""


def add_verb(
    subparsers: Any, name: str, summary: str, description: str, example: str = ""
) -> argparse.ArgumentParser:
    """A verb's parser with the shared formatter.

    Args:
        subparsers: the CLI's sub-parser collection.
        name: the verb.
        summary: one line for ``n2nonnx --help``.
        description: the verb's ``--help`` text.
        example: example command lines, shown after the options.

    Returns:
        The parser.
    """
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=example or None,
        formatter_class=HelpFormatter,
    )


def add_input(
    parser: argparse.ArgumentParser, help: str = "the ONNX model to read (never modified)"
) -> None:
    """The positional input model."""
    parser.add_argument("input", metavar="INPUT.onnx", help=help)


def add_output(
    parser: argparse.ArgumentParser, help: str = "where to write the resulting model"
) -> None:
    """``-o/--output FILE`` and ``--force``."""
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.onnx", help=help)
    add_force(parser)


def add_force(parser: argparse.ArgumentParser) -> None:
    """``--force``: outputs may replace existing files (never an input)."""
    parser.add_argument(
        "--force", action="store_true", help="replace output files that exist (inputs never)"
    )


def add_out_dir(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out DIR``: the report folder."""
    parser.add_argument("--out", default=default, metavar="DIR", help="report folder")


def add_seed(parser: argparse.ArgumentParser, help: str = "seed of every random choice") -> None:
    """``--seed N``."""
    parser.add_argument("--seed", type=seed_value, default=0, metavar="N", help=help)


def add_data(
    parser: argparse.ArgumentParser,
    *,
    required: bool = False,
    default: str | None = None,
    help: str = DATA_HELP,
) -> None:
    """``--data DATA``."""
    parser.add_argument("--data", required=required, default=default, metavar="DATA", help=help)


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch threads (1 is often fastest on a busy machine)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch threads (default: torch's choice; 1 is often fastest on a busy machine)",
    )


def add_sync_bn(parser: argparse.ArgumentParser) -> None:
    """``--sync-bn``: BatchNorm statistics over every process under ``torchrun``."""
    parser.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: BatchNorm normalises with the batch of every process",
    )


def add_input_shape(parser: argparse.ArgumentParser) -> None:
    """``--input-shape NAME=DIMS`` (repeatable)."""
    parser.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=DIMS",
        help="fix a symbolic input shape, e.g. x=1x3x32x32 (repeat for several inputs)",
    )


def add_training(
    parser: argparse.ArgumentParser, defaults: Any = None, *, title: str = "training recipe"
) -> None:
    """One option per field of :class:`~n2nonnx.training.config.TrainConfig` but the seed.

    Args:
        parser: the verb's parser.
        defaults: a ``TrainConfig`` whose values are the defaults (its class's by default).
        title: the option group's title.
    """
    from n2nonnx.training.config import TrainConfig

    group = parser.add_argument_group(title)
    base = defaults or TrainConfig()
    for item in fields(TrainConfig):
        if item.name == "seed":
            continue
        meta = item.metadata
        kind = {"int": int, "float": float}.get(str(item.type), str)
        option = "--" + item.name.replace("_", "-")
        group.add_argument(
            option,
            type=kind,
            default=getattr(base, item.name),
            metavar=meta.get("metavar"),
            choices=meta.get("choices"),
            help=meta["help"],
        )


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Sequence[str],
    defaults: Any = None,
) -> None:
    """One option per named field of an option class (see :func:`n2nonnx.fields.option`).

    The option is ``--field-name`` (or the field's ``flag``), its value stored under the
    field's name; help, metavar, choices and the argparse type come from the field. A bool
    field is a switch, a tuple field a repeatable option.

    Args:
        parser: the verb's parser or an option group.
        cls: the option dataclass (``PruneOptions``, ``SkipOptions`` ...).
        names: the fields to offer, in ``--help`` order.
        defaults: an instance whose values are the defaults (the class's by default).
    """
    by_name = {item.name: item for item in fields(cls)}
    for name in names:
        item = by_name[name]
        meta = item.metadata
        default = getattr(defaults, name) if defaults is not None else item.default
        if default is None and meta.get("cli_default") is not None:
            default = meta["cli_default"]
        flag = meta.get("flag") or "--" + name.replace("_", "-")
        common: dict[str, Any] = {"dest": name, "help": meta["help"]}
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", **common)
            continue
        if isinstance(default, tuple):
            parser.add_argument(
                flag, action="append", default=list(default), metavar=meta.get("metavar"), **common
            )
            continue
        parser.add_argument(
            flag,
            type=_PARSERS[meta.get("parse") or ("str" if meta.get("choices") else _kind(item))],
            default=default,
            metavar=meta.get("metavar"),
            choices=meta.get("choices"),
            **common,
        )


def field_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that ``args`` holds (those :func:`add_fields` added)."""
    return {item.name: getattr(args, item.name) for item in fields(cls) if hasattr(args, item.name)}


def _kind(item: Any) -> str:
    text = str(item.type)
    return "float" if "float" in text else "int" if "int" in text else "str"


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields parsed by :func:`add_training` (plus ``seed`` when the verb has one)."""
    from n2nonnx.training.config import TrainConfig

    names = [item.name for item in fields(TrainConfig)]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def parse_input_shapes(values: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``["x=1x3x32x32", ...]`` -> ``{"x": (1, 3, 32, 32)}``."""
    if not values:
        return None
    shapes = {}
    for value in values:
        name, _, dims = value.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            raise InvalidArgumentError(f"--input-shape {value!r} is not NAME=DIMS like x=1x3x32x32")
        shapes[name] = shape
    return shapes


def _checked(text: str, convert: type, allowed, where: str) -> Any:
    """``convert(text)`` if it parses and ``allowed(value)``, else an argparse type error.

    ``where`` ends the error, e.g. "is not in (0, 1]".
    """
    kind = "an integer" if convert is int else "a number"
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(f"{text} {where}")
    return value


def seed_value(text: str) -> int:
    """A seed: an integer in [0, 2**63)."""
    return _checked(text, int, lambda v: 0 <= v < 2**63, "is outside [0, 2**63)")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _checked(text, int, lambda v: v >= 1, "is not >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _checked(text, int, lambda v: v >= 0, "is not >= 0")


def fraction(text: str) -> float:
    """A number in (0, 1] (a density)."""
    return _checked(text, float, lambda v: 0 < v <= 1, "is not in (0, 1]")


def share(text: str) -> float:
    """A number in [0, 1) (a share of the budget)."""
    return _checked(text, float, lambda v: 0 <= v < 1, "is not in [0, 1)")


def positive_number(text: str) -> float:
    """A number > 0 (a width multiplier)."""
    return _checked(text, float, lambda v: v > 0, "is not > 0")


_PARSERS: dict[str, Any] = {
    "fraction": fraction,
    "positive_int": positive_int,
    "share": share,
    "seed_value": seed_value,
    "positive_number": positive_number,
    "int": int,
    "float": float,
    "str": str,
}


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` to torch (imported only when given)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


REPAIR_HELP = (
    "move the kept weights that lie on no input-to-output path onto live paths, keeping the "
    "number of non-zeros: by the pruning criterion's next-best scores where known, else at "
    "random (--seed); recorded in the model's metadata"
)


def add_repair(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--repair``, the same on every verb that builds a sparse model."""
    parser.add_argument("--repair", action="store_true", help=REPAIR_HELP)


def print_repairs(model: Model, count: int) -> None:
    """Print the summaries of the last ``count`` repair records of ``model``."""
    from n2nonnx.connectivity.repair import RepairRecord
    from n2nonnx.metadata import stages

    for record in stages(model.proto, "repair")[-count:] if count else []:
        print(RepairRecord.from_dict(record).summary())
