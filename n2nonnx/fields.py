"""Option fields: dataclass fields that carry their command-line help, and the checks they share.

The stages' option objects (:class:`~n2nonnx.pruning.options.PruneOptions`,
:class:`~n2nonnx.skip.options.SkipOptions`, :class:`~n2nonnx.scl.options.SclOptions`,
:class:`~n2nonnx.structured.options.StructuredOptions`) are frozen dataclasses whose fields
are made by :func:`option`: the default, the help text, the choices and how the command
line spells and parses the option are defined once, beside the check in ``__post_init__``,
and :mod:`n2nonnx.cli.options` builds the verbs' options from them. This module imports
nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any

from n2nonnx.errors import InvalidArgumentError


def option(
    default: Any,
    help: str,
    metavar: str | None = None,
    choices: tuple[Any, ...] | None = None,
    *,
    flag: str | None = None,
    parse: str | None = None,
    cli_default: Any = None,
) -> Any:
    """A dataclass field with its command-line description in ``metadata``.

    Args:
        default: the field's default.
        help: the option's help text.
        metavar: the value's name in ``--help``.
        choices: the allowed values (offered as argparse choices).
        flag: the command-line spelling when it is not ``--field-name``.
        parse: the name of the argparse type in :mod:`n2nonnx.cli.options` (``fraction``,
            ``positive_int`` ...), or ``int`` / ``float`` / ``str``; default: the field's type.
        cli_default: the command line's default when it differs from ``default`` (a field
            whose ``None`` means "the method's own value" shows that value on the command line).

    Returns:
        The field.
    """
    metadata = {
        "help": help,
        "metavar": metavar,
        "choices": choices,
        "flag": flag,
        "parse": parse,
        "cli_default": cli_default,
    }
    return field(default=default, metadata=metadata)


def values(options: Any) -> dict[str, Any]:
    """Field name -> value of a dataclass instance, in field order (values not copied)."""
    return {item.name: getattr(options, item.name) for item in fields(options)}


def refuse_unknown(cls: type, given: Any, what: str) -> None:
    """Refuse keys of ``given`` that are not fields of the dataclass ``cls``.

    Args:
        cls: the option class.
        given: the keyword arguments meant for it.
        what: what the options are, for the message ("structured pruning option").

    Raises:
        InvalidArgumentError: an unknown key, with the known ones.
    """
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")


def number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: Any, low: int) -> bool:
    """Whether ``value`` is an int (not a bool) >= ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
