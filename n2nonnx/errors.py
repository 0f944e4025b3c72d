"""One exception family for n2nonnx: every user-facing failure says what is wrong and what to do.

The CLI catches :class:`N2NError` and prints its message on one line, with exit status 2
for bad input and 1 for a :class:`WorkFailedError` (the input was fine, the work failed:
training diverged, a deployed model disagrees with its input). Nothing is written in
either case; anything else escaping is a bug in n2nonnx.
"""

from __future__ import annotations


class N2NError(Exception):
    """Base class of every error n2nonnx raises on bad input or an unsupported model."""


class ModelLoadError(N2NError):
    """The model file is missing, unreadable, not ONNX, or truncated."""


class InvalidModelError(N2NError):
    """The model is ONNX but inconsistent (fails onnx.checker, dangling edges, bad shapes)."""


class UnsupportedOpError(N2NError):
    """An op (or op version, or domain) that n2nonnx cannot analyse or execute."""


class NoPrunableLayerError(N2NError):
    """The model has no Conv / ConvTranspose / Gemm / MatMul layer with a constant weight."""


class ShapeError(N2NError):
    """A tensor shape n2nonnx needs is unknown or does not fit (pass --input-shape)."""


class InvalidArgumentError(N2NError, ValueError):
    """An argument is out of range or of the wrong kind (a density of 1.5, an unknown method)."""


class DataError(N2NError):
    """Training or scoring data is missing, malformed, or does not fit the model's input."""


class SaveError(N2NError):
    """The model could not be written (would overwrite its source, fails validation, I/O error)."""


class WorkFailedError(N2NError):
    """The input was valid but the work failed (exit status 1 on the CLI)."""


class TrainingDivergedError(WorkFailedError):
    """Training produced a non-finite loss."""


class VerificationError(WorkFailedError):
    """A rewritten model's outputs disagree with its input model's beyond the tolerance."""
