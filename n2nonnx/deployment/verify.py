"""Verification: the deployed model against the input model, both run in onnxruntime (or the target's runtime)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from n2nonnx.errors import VerificationError  # noqa: F401  (the one in n2nonnx.errors, re-exported)

# Default tolerances: (relative tolerance on the outputs' scale, least top-1 agreement).
TOLERANCES: dict[str, tuple[float | None, float | None]] = {
    "fp32": (1e-5, None),
    "fp16": (1e-2, 0.95),
    "int8": (None, 0.90),
    "int4": (None, 0.90),
}


@dataclass(frozen=True)
class Verification:
    """How closely the deployed model reproduces the input model.

    Attributes:
        mode: ``fp32`` (exact up to rounding), ``fp16`` (half-precision weights), ``int8``
            or ``int4`` (4-bit MatMul weights).
        samples: inputs compared.
        max_abs_diff: largest absolute difference over all outputs.
        scale: largest absolute value of the input model's outputs.
        relative: ``max_abs_diff / scale``.
        rtol: tolerance on ``relative`` (None: reported, not enforced).
        top1_agreement: fraction of samples with the same arg-max on the first output
            (None when it has a single class).
        min_agreement: least top-1 agreement accepted (None: not enforced).
        passed: both checks hold.
    """

    mode: str
    samples: int
    max_abs_diff: float
    scale: float
    relative: float
    rtol: float | None
    top1_agreement: float | None
    min_agreement: float | None
    passed: bool

    def to_dict(self) -> dict:
        """The comparison as plain JSON-ready values (for the provenance record)."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a report."""
        agreement = (
            "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.2%}"
        )
        rtol = "reported only" if self.rtol is None else f"tolerance {self.rtol:g}"
        return (
            f"{self.mode}: max |diff| {self.max_abs_diff:.3g} = {self.relative:.3g} of the output scale "
            f"({rtol}){agreement} on {self.samples} inputs"
        )


def compare(
    reference: onnx.ModelProto,
    deployed: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    mode: str = "fp32",
    rtol: float | None = None,
    min_agreement: float | None = None,
    providers: Sequence[str] | None = None,
    batch_size: int = 256,
) -> Verification:
    """Run both models in onnxruntime on ``feeds`` and compare every output.

    Args:
        reference: the input model.
        deployed: the deployed model.
        feeds: input name -> batch of inputs (batch first).
        mode: ``fp32``, ``fp16``, ``int8`` or ``int4``: picks default tolerances
            (:data:`TOLERANCES`).
        rtol: override the relative tolerance (on the scale of the reference outputs).
        min_agreement: override the least top-1 agreement.
        providers: onnxruntime execution providers (None: the runtime's choice).
        batch_size: inputs per onnxruntime call.

    Returns:
        The comparison; ``passed`` tells whether it is within tolerance.
    """
    from n2nonnx.runtime import make_session, run_in_batches

    reference_out, deployed_out = (
        run_in_batches(make_session(model, providers), feeds, batch_size)
        for model in (reference, deployed)
    )
    return compare_outputs(
        reference_out, deployed_out, mode=mode, rtol=rtol, min_agreement=min_agreement
    )


def compare_outputs(
    reference_out: Sequence[np.ndarray],
    deployed_out: Sequence[np.ndarray],
    *,
    mode: str = "fp32",
    rtol: float | None = None,
    min_agreement: float | None = None,
) -> Verification:
    """Compare two models' outputs on the same inputs (however they were run).

    Args:
        reference_out: the input model's outputs, in graph order, batch first.
        deployed_out: the deployed model's outputs, same order and shapes.
        mode: picks the default tolerances (:data:`TOLERANCES`).
        rtol: override the relative tolerance.
        min_agreement: override the least top-1 agreement.

    Returns:
        The comparison.

    Raises:
        VerificationError: the outputs differ in number or shape.
    """
    default_rtol, default_agreement = TOLERANCES[mode]
    rtol = default_rtol if rtol is None else rtol
    min_agreement = default_agreement if min_agreement is None else min_agreement
    if len(reference_out) != len(deployed_out) or any(
        np.shape(a) != np.shape(b) for a, b in zip(reference_out, deployed_out, strict=False)
    ):
        raise VerificationError(
            f"the deployed model's outputs {[np.shape(b) for b in deployed_out]} do not match "
            f"the input model's {[np.shape(a) for a in reference_out]}"
        )
    count = len(reference_out[0]) if reference_out and np.ndim(reference_out[0]) else 1
    max_abs = max(
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        for a, b in zip(reference_out, deployed_out, strict=True)
    )
    scale = max(float(np.max(np.abs(a), initial=0.0)) for a in reference_out)
    relative = max_abs / max(scale, float(np.finfo(np.float32).tiny))
    agreement = None
    first_ref, first_dep = reference_out[0], deployed_out[0]
    if first_ref.ndim >= 2 and first_ref.shape[-1] > 1:
        agreement = float(np.mean(first_ref.argmax(axis=-1) == first_dep.argmax(axis=-1)))
    passed = (rtol is None or relative <= rtol) and (
        min_agreement is None or agreement is None or agreement >= min_agreement
    )
    return Verification(
        mode, count, max_abs, scale, relative, rtol, agreement, min_agreement, passed
    )
