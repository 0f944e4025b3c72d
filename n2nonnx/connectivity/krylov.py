"""exp(-tA) v for a symmetric positive semi-definite operator A, by Lanczos.

With the orthonormal Krylov basis ``V_m`` of ``v, Av, ..., A^{m-1} v`` and the tridiagonal
``T_m = V_m^T A V_m``, ``exp(-tA) v ~ ||v|| V_m exp(-t T_m) e_1``. For symmetric A this
converges faster than any truncated Taylor series (about ``sqrt(t ||A||)`` products instead
of ``t ||A||``) and needs only products with A, so it works on operators that are never
stored as matrices (:class:`n2nonnx.connectivity.implicit.ImplicitFlow`). Times are
handled in increasing order, each state started from the previous one (as
:func:`n2nonnx.connectivity.heat.heat_state` does); an increment too long for
``MAX_DIMENSION`` basis vectors is split into equal pieces. The basis is fully
re-orthogonalised (cheap at these dimensions) and the step is accepted when the a
posteriori error estimate ``beta_{m+1} |e_m^T exp(-t T_m) e_1|`` (Saad 1992) stays below
``tolerance`` (relative to ``||v||``) on two consecutive dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg

MAX_DIMENSION = 120
"""Largest Krylov basis (vectors of length n held at once)."""

TOLERANCE = 1e-12
"""Accepted error of one step, relative to the norm of the vector it acts on."""


def expm_action(
    apply: Callable[[np.ndarray], np.ndarray],
    vector: np.ndarray,
    times: np.ndarray,
    *,
    tolerance: float = TOLERANCE,
    max_dimension: int = MAX_DIMENSION,
) -> np.ndarray:
    """``exp(-t A) v`` at every time, A symmetric positive semi-definite.

    Args:
        apply: ``x -> A @ x`` for a float64 vector x.
        vector: v.
        times: non-negative times, in any order.
        tolerance: accepted error per step, relative to the norm of the vector stepped.
        max_dimension: largest Krylov basis before an increment is split.

    Returns:
        (len(times), len(vector)) array; row i is exp(-times[i] A) v.
    """
    order = np.argsort(times, kind="stable")
    states = np.empty((len(times), vector.size), dtype=np.float64)
    current, now = np.asarray(vector, dtype=np.float64), 0.0
    piece = np.inf  # longest increment known to converge within max_dimension
    for position in order:
        remaining = float(times[position]) - now
        while remaining > 0:
            step = min(piece, remaining)
            advanced = _lanczos_step(apply, current, step, tolerance, max_dimension)
            if advanced is None:
                piece = step / 2
                continue
            current, remaining = advanced, remaining - step
        now = max(now, float(times[position]))
        states[position] = current
    return states


def _lanczos_step(apply, vector, time, tolerance, max_dimension) -> np.ndarray | None:
    """exp(-time A) vector, or None when ``max_dimension`` basis vectors do not suffice."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        return vector.copy()
    basis = np.empty((max_dimension + 1, vector.size), dtype=np.float64)
    basis[0] = vector / norm
    diagonal: list[float] = []
    off: list[float] = []
    below = 0
    for j in range(max_dimension):
        w = apply(basis[j])
        alpha = float(basis[j] @ w)
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        diagonal.append(alpha)
        coefficients = _expm_tridiagonal(np.asarray(diagonal), np.asarray(off), time)
        scale = max(abs(alpha), beta, 1.0)
        if beta <= 1e-14 * scale:  # invariant subspace: exact
            return norm * (basis[: j + 1].T @ coefficients)
        below = below + 1 if beta * abs(coefficients[-1]) <= tolerance else 0
        if below == 2:
            return norm * (basis[: j + 1].T @ coefficients)
        off.append(beta)
        basis[j + 1] = w / beta
    return None


def _expm_tridiagonal(diagonal: np.ndarray, off: np.ndarray, time: float) -> np.ndarray:
    """``exp(-time T) e_1`` for the symmetric tridiagonal T (diagonal, off-diagonal)."""
    if diagonal.size == 1:
        return np.exp(-time * diagonal)
    values, vectors = scipy.linalg.eigh_tridiagonal(diagonal, off)
    return vectors @ (np.exp(-time * values) * vectors[0])
