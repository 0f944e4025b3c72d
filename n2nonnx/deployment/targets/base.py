"""The records and helpers every deployment target shares: Target, Package, Prepared, file writing.

The targets themselves (one file each) import these; :mod:`n2nonnx.deployment.targets`
(the package) holds the registry and imports the targets.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from n2nonnx.errors import InvalidArgumentError, SaveError
from n2nonnx.model import Model


@dataclass
class Package:
    """The files of a deployed model for one target, verified in the target's runtime.

    Attributes:
        files: file name suffix -> bytes; ``""`` is the main file (written at ``-o``),
            others are written beside it (``-o`` with its suffix replaced).
        verification: the comparison in the target's runtime with the input model (None
            when the main file is the verified ONNX model itself).
        info: JSON-able facts for the summary.
        lines: report lines.
    """

    files: dict[str, bytes]
    verification: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """What :meth:`Target.prepare` did to the pruned model.

    Attributes:
        model: the model to quantize, store and verify from here on.
        reference: what the deployed model is verified against (the input model unless
            the step changes the function, as the 2:4 repair does).
        info: JSON-able facts for the summary.
        lines: report lines.
    """

    model: Model
    reference: onnx.ModelProto
    info: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


class Target:
    """A deployment target (subclassed once per target module).

    Attributes:
        name: the ``--target`` value.
        suffix: the main file's ending.
        runtime: the module its runtime is imported as (None: onnxruntime, always there).
        extra: the n2nonnx extra that installs the runtime.
        quantize: the quantization modes it takes (None among them: none).
        companions: endings of the files written beside the main one (``-o`` with its
            suffix replaced).
    """

    name = ""
    suffix = ".onnx"
    companions: tuple[str, ...] = ()
    runtime: str | None = None
    extra: str | None = None
    quantize: tuple[str | None, ...] = (None, "int8", "int4")

    def missing(self) -> str | None:
        """Why the target's runtime cannot be used here (one line), or None."""
        if self.runtime is None or importlib.util.find_spec(self.runtime) is not None:
            return None
        return (
            f"--target {self.name} needs the {self.runtime} runtime, which is not installed: "
            f"pip install 'n2nonnx[{self.extra}]'"
        )

    def check(self, quantize: str | None) -> None:
        """Refuse options the target cannot take.

        Raises:
            InvalidArgumentError: the runtime is missing, or the quantization mode is not
                one the target runs.
        """
        missing = self.missing()
        if missing:
            raise InvalidArgumentError(missing)
        if quantize not in self.quantize:
            allowed = ", ".join("none" if q is None else q for q in self.quantize)
            raise InvalidArgumentError(
                f"--target {self.name} takes --quantize {allowed}, not {quantize}"
            )

    def prepare(
        self, model: Model, reference: onnx.ModelProto, feeds: Mapping[str, np.ndarray]
    ) -> Prepared:
        """A step on the pruned model before quantization and storage (default: none)."""
        return Prepared(model, reference)

    def package(
        self,
        deployed: onnx.ModelProto,
        reference: onnx.ModelProto,
        feeds: Mapping[str, np.ndarray],
        *,
        mode: str,
        rtol: float | None,
        min_agreement: float | None,
        quantize: str | None,
    ) -> Package:
        """The target's files for the verified ``deployed`` model (default: the ONNX file)."""
        return Package({"": deployed.SerializeToString()})


def check_output_suffix(target: Target, path: str | os.PathLike[str]) -> None:
    """Refuse an ``-o`` whose ending is not the target's format.

    Raises:
        InvalidArgumentError: the ending does not match.
    """
    name = Path(path).name.lower()
    if not name.endswith(target.suffix):
        raise InvalidArgumentError(
            f"-o {str(path)!r}: --target {target.name} writes a {target.suffix} file; "
            f"name the output *{target.suffix}"
        )


def output_paths(path: str | os.PathLike[str], files: Sequence[str]) -> dict[str, Path]:
    """Where each file of a package goes: ``""`` at ``path``, others with the suffix replaced."""
    main = Path(path)
    stem = main.name[: -len(main.suffix)] if main.suffix else main.name
    return {key: main if key == "" else main.with_name(stem + key) for key in files}


def write_package(package: Package, path: str | os.PathLike[str]) -> Path:
    """Write the package's files atomically (each through a temporary file, then renamed).

    Returns:
        The main file's path.

    Raises:
        SaveError: a file could not be written; files already renamed are removed.
    """
    targets = output_paths(path, list(package.files))
    written: list[Path] = []
    try:
        for key, target in targets.items():
            handle, scratch = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
            )
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(package.files[key])
                mask = os.umask(0)
                os.umask(mask)
                os.chmod(scratch, 0o666 & ~mask)
                os.replace(scratch, target)
            except BaseException:
                Path(scratch).unlink(missing_ok=True)
                raise
            written.append(target)
    except OSError as error:
        for done in written:
            done.unlink(missing_ok=True)
        raise SaveError(f"cannot write {path}: {error.strerror or error}") from None
    return targets[""]


def run_in_batches(run, feeds: Mapping[str, np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
    """``run(chunk) -> list of outputs`` over ``feeds`` in batches, outputs concatenated."""
    count = len(next(iter(feeds.values())))
    chunks = []
    for start in range(0, count, batch_size):
        chunks.append(run({k: v[start : start + batch_size] for k, v in feeds.items()}))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
