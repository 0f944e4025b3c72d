"""The ``n2nonnx`` command: ``n2nonnx VERB INPUT.onnx -o OUTPUT.onnx [options]``.

Each verb is a module of this package with ``register(subparsers)`` (its parser, with
``set_defaults(func=run)``) and ``run(args) -> int``. Verbs are listed in :data:`VERBS`
and imported only when named, so ``n2nonnx --help`` and ``n2nonnx VERB --help`` start
without importing torch, onnx or onnxruntime.

Exit status: 0 on success, 2 for bad input (one ``error:`` line naming the problem and the
fix, nothing written), 1 when the work itself fails (training diverged, a deployed model
disagrees with its input: one ``failed:`` line, nothing half written), 130 on Ctrl-C. A
file that cannot be written (a full disk) is reported like bad input, on one line.
Warnings (n2nonnx's own and Python's, e.g. numpy's RuntimeWarning) are held back until the
command succeeds, so a failing command prints exactly one line on stderr; ``--verbose``
shows them as they happen. Progress (the epoch lines, each stage's log) is shown as it
happens on a terminal, where the error line still comes last; when stderr is a file or a
pipe it is held like the warnings (shown once the command succeeded, dropped when it fails),
so what a script captures from a failing command is the one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from n2nonnx import __version__
from n2nonnx.errors import N2NError, WorkFailedError

#: verb -> (module, one-line summary), in the order ``--help`` lists them.
VERBS: dict[str, tuple[str, str]] = {
    "inspect": ("n2nonnx.cli.inspect", "print a model's prunable layers, units and wiring"),
    "prune": ("n2nonnx.cli.prune", "prune a model (at initialization, learned, or structured)"),
    "skip": (
        "n2nonnx.cli.skip",
        "add sparse N2NSkip connections within the model's non-zero budget",
    ),
    "train": (
        "n2nonnx.cli.train",
        "train an ONNX model (masked weights stay zero) and save the trained copy",
    ),
    "connectivity": ("n2nonnx.cli.connectivity", "compare models' connectivity by heat diffusion"),
    "deploy": (
        "n2nonnx.cli.deploy",
        "fold masks, remove dead units, store compactly, int8; verified",
    ),
    "run": ("n2nonnx.cli.run", "the main job: prune + N2NSkip + train + deploy + report"),
    "study": ("n2nonnx.cli.study", "the N2NSkip comparison over densities and seeds (resumable)"),
}

DESCRIPTION = """\
Framework-agnostic model surgery via ONNX: prune a model (random, magnitude, SNIP, GraSP,
SynFlow, SCL, SNACS), add N2NSkip connections, train it with PyTorch, measure its
connectivity by heat diffusion, and deploy it smaller and faster on onnxruntime.
`n2nonnx VERB --help` describes each verb."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one usage-error line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(verb: str | None = None) -> Parser:
    """The parser; only ``verb``'s module is imported (the others are listed by name).

    Args:
        verb: the verb whose options are needed, or None for the overview.

    Returns:
        The parser.
    """
    from n2nonnx.cli.options import HelpFormatter

    parser = Parser(prog="n2nonnx", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"n2nonnx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage's details")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for name, (module, summary) in VERBS.items():
        if name == verb:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as stop:  # --help, --version, or a usage error (already printed)
        return stop.code if isinstance(stop.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("n2nonnx").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logging.captureWarnings(True)
    held = _HeldWarnings(enabled=not args.verbose, progress=not _is_terminal(sys.stderr))
    speaks = os.environ.get("RANK", "0") == "0"  # under torchrun only the first process reports
    try:
        status = int(args.func(args) or 0)
    except WorkFailedError as error:
        if speaks:
            print(f"n2nonnx {verb}: failed: {_one_line(error)}", file=sys.stderr)
        return 1
    except N2NError as error:
        if speaks:
            print(f"n2nonnx {verb}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"n2nonnx {verb}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as error:  # a file that cannot be written or read (disk full, I/O error)
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        print(
            f"n2nonnx {verb}: error: {error.strerror or _one_line(error)}{where}; nothing was written",
            file=sys.stderr,
        )
        return 2
    finally:
        held.close()
    held.release()
    return status


class _HeldWarnings(logging.Filter):
    """Holds back warning records (and Python warnings) until the command has succeeded."""

    def __init__(self, enabled: bool = True, progress: bool = False) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.handlers = list(logging.root.handlers) if enabled else []
        self.lowest = logging.INFO if progress else logging.WARNING  # held from this level up
        for handler in self.handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.lowest:
            return True
        if record.levelno < logging.WARNING:  # progress, held in order with the warnings
            if all(record is not held for held in self.records):
                self.records.append(record)
            return False
        if (
            record.name == "py.warnings"
        ):  # "file:line: Category: message\n  source line": keep the message
            text = record.getMessage().strip().splitlines()[0]
            record.msg, record.args = "warning: " + text.split(": ", 1)[-1], None
        if all(record is not held for held in self.records):
            self.records.append(record)
        return False

    def close(self) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)

    def release(self) -> None:
        for record in self.records:
            for handler in self.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # replaced by an object without one, or closed
        return False


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
