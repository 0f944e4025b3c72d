"""Reading and writing models: paths, bytes, external data, >2 GB models, atomic writes.

This module is the protobuf edge on the way in and out: :func:`load` turns a path,
bytes or a ModelProto into a normalised :class:`~n2nonnx.model.Model`; :func:`save`
writes one atomically and refuses to leave a file behind that onnx or onnxruntime
would reject.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from n2nonnx.errors import InvalidModelError, ModelLoadError, SaveError
from n2nonnx.graph.normalize import initializer_bytes, normalize
from n2nonnx.model import Model

PROTOBUF_LIMIT = 2**31 - 1
# Above this many bytes of tensors a model is saved with external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

ModelSource = str | os.PathLike | bytes | onnx.ModelProto | Model

# Scratch folders of save(): ".n2nonnx-XXXX" beside the destination, holding a marker file
# that names the writing process; one left by a killed process is removed at the next save.
SCRATCH_PREFIX = ".n2nonnx-"
SCRATCH_MARKER = "owner"
STALE_SCRATCH_SECONDS = 3600

log = logging.getLogger(__name__)


def load(
    source: ModelSource,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    upgrade: bool = True,
    analyze: bool = True,
) -> Model:
    """Load and normalise a model.

    Args:
        source: a path (external data beside it is loaded too), serialized bytes, a
            ``ModelProto`` (not modified), or a ``Model`` (re-normalised).
        input_shapes: graph input name -> full shape, for models whose non-batch input
            dimensions are symbolic (e.g. ``{"x": (1, 3, 224, 224)}``).
        upgrade: upgrade opsets older than 13 with onnx's version converter.
        analyze: build the layer view now, so that problems surface at load time.

    Returns:
        The normalised model.

    Raises:
        ModelLoadError: missing, unreadable, non-ONNX or truncated file.
        InvalidModelError: the model fails onnx.checker.
        ShapeError, UnsupportedOpError, NoPrunableLayerError: from the layer view.
    """
    proto, path, external_files = _read(source)
    _check(proto, path)
    # A proto read here from a file or bytes is ours to normalise in place; never a caller's.
    owned = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))
    model = Model(
        normalize(proto, input_shapes, upgrade=upgrade, copy_input=not owned), source=path
    )
    model.external_files = external_files
    if analyze:
        _ = model.layers
    return model


def save(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike,
    *,
    overwrite_source: bool = False,
    external_data: bool | None = None,
    validate: bool = True,
) -> Path:
    """Write a model atomically (temporary file, then rename).

    The model is written and validated in a scratch folder ``.n2nonnx-XXXX`` beside the
    destination, then renamed into place, so the destination is either the old file or the
    whole new one. A process killed mid-save (``kill -9``, power loss) leaves its scratch
    folder behind; every save first removes the stale scratch folders of the destination's
    folder: those whose marker names a process of this machine that no longer runs, and
    those without a readable marker older than an hour.

    Args:
        model: what to write.
        path: destination ``.onnx`` file. External data goes to ``<name>.data`` beside it.
        overwrite_source: allow writing over the file the model was loaded from.
        external_data: force (True) or forbid (False) external data; ``None`` decides by
            size (above :data:`EXTERNAL_DATA_THRESHOLD` bytes of tensors).
        validate: run ``onnx.checker`` (full check) and open an onnxruntime session on
            the written file before it replaces the destination.

    Returns:
        The path written.

    Raises:
        SaveError: the destination is the source, its folder does not exist, or the
            model fails validation (nothing is written then).
    """
    proto = model.proto if isinstance(model, Model) else model
    target = Path(path).expanduser().resolve()
    source = model.source if isinstance(model, Model) else None
    if source is not None and target == Path(source).resolve() and not overwrite_source:
        raise SaveError(
            f"refusing to overwrite {target}, the file this model was loaded from; "
            "write to another path (or pass overwrite_source=True / --force)"
        )
    if not target.parent.is_dir():
        raise SaveError(f"cannot write {target}: folder {target.parent} does not exist")
    data_target = target.parent / (target.name + ".data")
    if data_target in getattr(model, "external_files", ()) and not overwrite_source:
        raise SaveError(
            f"refusing to write {data_target}: it holds the weights of the model this one was "
            "loaded from; write to another path (or pass overwrite_source=True / --force)"
        )
    if target.is_dir():
        raise SaveError(f"cannot write {target}: it is a folder; give a file name ending in .onnx")
    use_external = (
        external_data
        if external_data is not None
        else initializer_bytes(proto) > EXTERNAL_DATA_THRESHOLD
    )
    try:
        scratch = make_scratch(target.parent)
    except OSError as error:
        raise SaveError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        staged = scratch / target.name
        data_name = target.name + ".data"
        if use_external:
            copy = onnx.ModelProto()
            copy.CopyFrom(proto)
            onnx.save_model(
                copy,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            if is_large(proto):
                raise SaveError(
                    "the model is over 2 GB, too big for one file; save it with external data"
                )
            staged.write_bytes(proto.SerializeToString())
        if validate:
            _validate_file(staged)
        if (scratch / data_name).exists():
            os.replace(scratch / data_name, target.parent / data_name)
        os.replace(staged, target)
    except OSError as error:
        raise SaveError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def make_scratch(folder: str | os.PathLike) -> Path:
    """A new scratch folder ``.n2nonnx-XXXX`` in ``folder``, marked as this process's.

    Stale scratch folders that killed processes left in ``folder`` are removed first (see
    :func:`save`). The caller removes the new folder when done.

    Args:
        folder: where the files being staged will end up (same file system: renames are atomic).

    Returns:
        The scratch folder.

    Raises:
        OSError: the folder cannot be created.
    """
    remove_stale_scratch(folder)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=folder))
    try:
        (scratch / SCRATCH_MARKER).write_text(_owner())
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch


def remove_stale_scratch(folder: str | os.PathLike) -> list[Path]:
    """Remove the scratch folders that killed saves left in ``folder`` (see :func:`save`).

    Args:
        folder: the folder to clean.

    Returns:
        The folders removed.
    """
    removed: list[Path] = []
    try:
        candidates = [
            p for p in Path(folder).iterdir() if p.name.startswith(SCRATCH_PREFIX) and p.is_dir()
        ]
    except OSError:
        return removed
    for scratch in candidates:
        if _is_stale(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            if not scratch.exists():
                log.info("removed %s, left by an interrupted save", scratch)
                removed.append(scratch)
    return removed


def _owner() -> str:
    """``host pid start-time`` of this process (start time guards against a reused pid)."""
    return f"{socket.gethostname()} {os.getpid()} {_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[19]  # field 22 of stat: start time in clock ticks since boot
    except (OSError, IndexError):
        return "?"


def _is_stale(scratch: Path) -> bool:
    try:
        host, pid_text, started = (scratch / SCRATCH_MARKER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        try:  # no marker yet (killed right after creating the folder) or a damaged one
            return time.time() - scratch.stat().st_mtime > STALE_SCRATCH_SECONDS
        except OSError:
            return False
    if host != socket.gethostname():  # another machine's save on a shared folder
        return time.time() - scratch.stat().st_mtime > STALE_SCRATCH_SECONDS
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return started != "?" and _start_time(pid) != started  # the pid now belongs to another process


def is_large(proto: onnx.ModelProto) -> bool:
    """True when the model's tensors alone come near protobuf's 2 GB limit.

    (``ByteSize()`` itself fails above the limit, so the tensors are counted instead.)
    """
    return initializer_bytes(proto) > PROTOBUF_LIMIT - 64 * 2**20


def _read(source: ModelSource) -> tuple[onnx.ModelProto, Path | None, frozenset[Path]]:
    """The proto, the file it came from, and the external data files that came with it."""
    if isinstance(source, Model):
        return source.proto, source.source, source.external_files
    if isinstance(source, onnx.ModelProto):
        return source, None, frozenset()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "the given bytes"), None, frozenset()
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"no such file: {path}; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the path of an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}") from None
    proto = _parse(data, str(path))
    external_files = frozenset(
        (path.parent / entry.value).resolve()
        for tensor in proto.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    )
    if external_files:
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as error:
            raise ModelLoadError(
                f"{path}: its external data could not be read ({error}); keep the data file "
                "next to the model under the name the model records"
            ) from None
    return proto, path.resolve(), external_files


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{what} is empty; it is not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(
            f"{what} is not an ONNX model or is truncated (protobuf parse failed); "
            "re-export or re-download it"
        ) from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelLoadError(
            f"{what} is not an ONNX model or is truncated (no graph, IR version or opset); "
            "re-export it"
        )
    return proto


def _check(proto: onnx.ModelProto, path: Path | None) -> None:
    try:
        if is_large(proto) and path is not None:
            onnx.checker.check_model(str(path))  # the in-memory check cannot serialise >2 GB
        else:
            onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        first = str(error).strip().splitlines()[0]
        raise InvalidModelError(
            f"the model is not valid ONNX: {first}. Fix the exporter settings or the graph"
        ) from None


def _onnxruntime_errors() -> tuple[type[Exception], ...]:
    """The exception types onnxruntime raises when it cannot open a model.

    Its status codes (``Fail``, ``InvalidGraph``, ``NoSuchFile``, ``NotImplemented`` ...) are
    classes of ``onnxruntime_pybind11_state`` that derive from ``Exception`` directly, with no
    shared base, and which of them exist depends on the onnxruntime version; its Python
    wrapper raises ``ValueError`` and ``RuntimeError``.

    Returns:
        Every exception class onnxruntime's binding defines, plus those two.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    bound = (v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return (*bound, RuntimeError, ValueError)


def _validate_file(path: Path) -> None:
    from n2nonnx.runtime import make_session

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        first = str(error).strip().splitlines()[0]
        raise SaveError(f"refusing to save an invalid model: {first}") from None
    try:
        make_session(str(path))
    except _onnxruntime_errors() as error:
        first = str(error).strip().splitlines()[0]
        raise SaveError(f"refusing to save a model onnxruntime cannot open: {first}") from None
