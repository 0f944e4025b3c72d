"""Output paths: checks made before any work starts, and atomic writes of small files.

One place for the rules every verb follows: an output never replaces an input, an
existing file is replaced only when the caller says so, a folder that does not exist or
cannot be written is named before minutes of work are spent, and a file is either
written whole or not at all. (Models are written by :func:`n2nonnx.io.save`.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from n2nonnx.errors import InvalidArgumentError, SaveError

_NAME_MAX = 255


def check_output_file(
    path: str | os.PathLike[str],
    *,
    label: str = "output",
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    suffixes: tuple[str, ...] = (),
    new_folder: bool = False,
) -> Path:
    """Refuse an output file that cannot or must not be written.

    Args:
        path: where the file will be written.
        label: how the caller names it in messages (``"-o"``, ``"--history"``, ``"path"``).
        force: allow replacing an existing file (never an input).
        inputs: files the command reads; none of them may be the output.
        suffixes: allowed file name endings (``(".onnx",)``); empty allows any.
        new_folder: the caller creates the file's folder (a report folder) first.

    Returns:
        The resolved path.

    Raises:
        InvalidArgumentError: the path is an input, a folder, in a missing or read-only
            folder, too long, of the wrong kind, or exists without ``force``.
    """
    target = Path(path).expanduser()
    resolved = target.resolve()
    for source in inputs:
        if source is not None and Path(source).expanduser().resolve() == resolved:
            raise InvalidArgumentError(
                f"{label} {str(target)!r} is an input of this command; n2nonnx never modifies "
                "its inputs, choose another path"
            )
    if len(resolved.name.encode()) > _NAME_MAX:
        raise InvalidArgumentError(
            f"{label}: the file name is longer than {_NAME_MAX} bytes; choose a shorter one"
        )
    if target.is_dir():
        raise InvalidArgumentError(f"{label} {str(target)!r} is a folder; give a file name")
    if suffixes and not resolved.name.lower().endswith(suffixes):
        raise InvalidArgumentError(f"{label} {str(target)!r} must end in {' or '.join(suffixes)}")
    if new_folder:
        check_output_dir(resolved.parent, label=label)
    else:
        _check_folder(resolved.parent, label, target)
    if target.exists() and not force:
        raise InvalidArgumentError(f"{label} {str(target)!r} exists; pass --force to replace it")
    return resolved


def check_output_dir(path: str | os.PathLike[str], *, label: str = "--out") -> Path:
    """Refuse a report folder that cannot be created or written.

    Args:
        path: the folder (created later, by the caller, once the work succeeded).
        label: how the caller names it in messages.

    Returns:
        The resolved path.

    Raises:
        InvalidArgumentError: the path is a file, has a name too long for the file system,
            or its nearest existing ancestor is not a writable folder.
    """
    target = Path(path).expanduser()
    if any(len(part.encode()) > _NAME_MAX for part in target.parts):
        raise InvalidArgumentError(
            f"{label}: a folder name is longer than {_NAME_MAX} bytes; choose a shorter one"
        )
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"{label} {str(target)!r} is a file; give a folder")
    existing = target.resolve()
    while not existing.exists():
        existing = existing.parent
    _check_folder(existing, label, target)
    return target.resolve()


def _check_folder(folder: Path, label: str, target: Path) -> None:
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"{label} {str(target)!r}: folder {str(folder)!r} does not exist"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"{label} {str(target)!r}: folder {str(folder)!r} is not writable"
        )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename.

    Args:
        path: the destination.
        text: the content.

    Returns:
        The path written.

    Raises:
        SaveError: the file could not be written (read-only folder, full disk ...); the
            destination is then untouched and no temporary file is left.
    """
    target = Path(path)
    try:
        handle, scratch = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise SaveError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(scratch, 0o666 & ~_umask())  # mkstemp makes it private; give it a new file's mode
        os.replace(scratch, target)
    except BaseException as error:
        Path(scratch).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise SaveError(f"cannot write {target}: {error.strerror or error}") from None
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
