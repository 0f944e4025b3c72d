"""onnxruntime sessions: provider choice from what is actually available, and one-call runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

if TYPE_CHECKING:
    from n2nonnx.model import Model


_LEVELS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# Preference order when the caller does not name providers.
_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


_QUIET = False


def _quiet_default_logger() -> None:
    """Sets onnxruntime's process-wide logger to errors only, once.

    Done when n2nonnx first opens a session, not at import: importing n2nonnx changes no
    global setting.
    """
    global _QUIET
    if not _QUIET:
        ort.set_default_logger_severity(3)
        _QUIET = True


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build can use on this machine."""
    return list(ort.get_available_providers())


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Providers to open a session with.

    Args:
        requested: provider names in order of preference; ``None`` picks CUDA when the
            installed onnxruntime has it, else CPU. Names this build lacks are dropped
            (onnxruntime-gpu on a machine without CUDA would otherwise log loud errors).

    Returns:
        A non-empty list that always ends with ``CPUExecutionProvider``.
    """
    available = set(available_providers())
    wanted = list(requested) if requested else list(_PREFERRED)
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


def make_session(
    model: Model | onnx.ModelProto | bytes | str,
    providers: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    optimization: str = "all",
) -> ort.InferenceSession:
    """Open an onnxruntime session on a model object, a ModelProto, bytes or a path.

    Args:
        model: what to run. A path is opened by onnxruntime directly (external data works).
        providers: see :func:`choose_providers`.
        threads: intra-op threads (``None``: onnxruntime's default).
        optimization: onnxruntime graph optimisation level: ``none``, ``basic``,
            ``extended`` or ``all``. ``basic`` (constant folding, no fusions) gives
            bit-identical results for graphs that differ only by folded constants.

    Returns:
        The session.
    """
    _quiet_default_logger()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    options.graph_optimization_level = _LEVELS[optimization]
    if threads is not None:
        options.intra_op_num_threads = threads
    if hasattr(model, "proto"):
        model = model.proto
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, sess_options=options, providers=choose_providers(providers))


def run(
    model: Model | onnx.ModelProto | bytes | str | ort.InferenceSession,
    feeds: Mapping[str, np.ndarray] | np.ndarray,
    providers: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run a model once in onnxruntime and return all outputs.

    Args:
        model: a session or anything :func:`make_session` accepts.
        feeds: input name -> array, or one array for a single-input model.
        providers: see :func:`choose_providers`.
    """
    session = model if isinstance(model, ort.InferenceSession) else make_session(model, providers)
    if isinstance(feeds, np.ndarray):
        feeds = {session.get_inputs()[0].name: feeds}
    return session.run(None, dict(feeds))


def accuracy(
    model: Model | onnx.ModelProto | bytes | str | ort.InferenceSession,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 1024,
    providers: Sequence[str] | None = None,
) -> float:
    """Top-1 accuracy of a classifier run in onnxruntime.

    The class scores are the output training uses (:func:`scores_output`: scikit-learn's
    ``probabilities``, not its ``label``); batches as in :func:`run_in_batches`.

    Args:
        model: a session or anything :func:`make_session` accepts.
        x: inputs, batch first, in the model input's dtype.
        y: integer class labels.
        batch_size: samples per onnxruntime call (a fixed batch overrides it).
        providers: see :func:`choose_providers`.
    """
    session = model if isinstance(model, ort.InferenceSession) else make_session(model, providers)
    name = session.get_inputs()[0].name
    wanted = scores_output(session)
    scores = run_in_batches(session, {name: x}, batch_size, outputs=[wanted])[0]
    correct = int((scores.argmax(axis=-1) == np.asarray(y)).sum()) if len(x) else 0
    return correct / max(len(x), 1)


def run_in_batches(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    outputs: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``feeds`` (batch first) in batches and join every output along dim 0.

    A model exported with a fixed batch runs in chunks of that batch, the last one padded
    with copies of its last sample (the padding is cut from the outputs). Floating data for
    an integer input (token ids the data layer holds as float32) is cast to its type.

    Args:
        session: an open session.
        feeds: input name -> all samples.
        batch_size: samples per call (a fixed batch overrides it).
        outputs: the outputs wanted (None: all).

    Returns:
        One array per output, all samples along dim 0.
    """
    types = {value.name: _INTEGER_TYPES.get(value.type) for value in session.get_inputs()}
    feeds = {
        name: np.asarray(value).astype(types[name])
        if types.get(name) is not None and np.asarray(value).dtype != types[name]
        else np.asarray(value)
        for name, value in feeds.items()
    }
    count = len(next(iter(feeds.values())))
    fixed = _fixed_batch(session)
    step = fixed or batch_size
    pieces: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        chunk = {name: value[start : start + step] for name, value in feeds.items()}
        size = len(next(iter(chunk.values())))
        if fixed is not None and size < fixed:
            chunk = {
                name: np.concatenate([value, np.repeat(value[-1:], fixed - size, axis=0)])
                for name, value in chunk.items()
            }
            pieces.append([o[:size] for o in session.run(outputs, chunk)])
        else:
            pieces.append(session.run(outputs, chunk))
    if not pieces:
        return [np.empty((0,)) for _ in outputs or session.get_outputs()]
    return [np.concatenate([piece[i] for piece in pieces]) for i in range(len(pieces[0]))]


_INTEGER_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}
_FLOAT_TYPES = {"tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"}


def scores_output(session: ort.InferenceSession) -> str:
    """The output holding class scores, by the rule of :mod:`n2nonnx.graph.outputs`.

    Args:
        session: an open session.

    Returns:
        The first floating-point output of rank >= 2 (or of unknown rank), else the first
        floating-point output, else the first output.
    """
    outputs = session.get_outputs()
    floating = [o for o in outputs if o.type in _FLOAT_TYPES]
    for output in floating:
        if output.shape is None or len(output.shape) >= 2:
            return output.name
    return (floating or outputs)[0].name


def _fixed_batch(session: ort.InferenceSession) -> int | None:
    """Dim 0 of every input where it is one static size (a batch baked in), else None."""
    sizes = set()
    for value in session.get_inputs():
        shape = value.shape
        if not shape or not isinstance(shape[0], int) or shape[0] <= 0:
            return None
        sizes.add(shape[0])
    return sizes.pop() if len(sizes) == 1 else None
