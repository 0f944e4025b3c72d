"""exp(-tA) v for a symmetric positive semi-definite operator A, by Lanczos.

With the orthonormal Krylov basis ``V_m`` of ``v, Av, ..., A^{m-1} v`` and the tridiagonal
``T_m = V_m^T A V_m``, ``exp(-tA) v ~ ||v|| V_m exp(-t T_m) e_1``. It needs only products
with A, so it works on operators never stored as matrices
(:class:`n2nonnx.connectivity.implicit.ImplicitFlow`), and for symmetric A it needs about
``sqrt(t ||A||)`` products where a truncated Taylor series needs ``t ||A||``.

The dimension m is chosen *a priori* from Hochbruck & Lubich's bound (SIAM J. Numer. Anal.
34, 1997, theorem 2): with the eigenvalues of tA in ``[0, 4 rho]`` the error is at most
``10 exp(-m^2 / (5 rho))`` for ``sqrt(4 rho) <= m <= 2 rho`` and
``10 / rho exp(-rho) (e rho / m)^m`` for ``m >= 2 rho``, relative to ``||v||``. An a posteriori
estimate would stop too early at large t: before the Krylov space holds the slowly decaying
directions, ``exp(-t T_m)`` is tiny and so is the estimate. Times are taken in increasing
order, each state started from the previous one; an increment that would need more than
``MAX_DIMENSION`` vectors is split into equal pieces. The basis is fully re-orthogonalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg

MAX_DIMENSION = 120
"""Largest Krylov basis (vectors of length n held at once)."""

TOLERANCE = 1e-12
"""Error bound of one step, relative to the norm of the vector it acts on."""


def expm_action(
    apply: Callable[[np.ndarray], np.ndarray],
    vector: np.ndarray,
    times: np.ndarray,
    spectral_bound: float,
    *,
    tolerance: float = TOLERANCE,
    max_dimension: int = MAX_DIMENSION,
) -> np.ndarray:
    """``exp(-t A) v`` at every time, A symmetric positive semi-definite.

    Args:
        apply: ``x -> A @ x`` for a float64 vector x.
        vector: v.
        times: non-negative times, in any order.
        spectral_bound: an upper bound of A's largest eigenvalue (for a graph Laplacian,
            twice the largest degree).
        tolerance: error bound per step, relative to the norm of the vector stepped.
        max_dimension: largest Krylov basis before an increment is split.

    Returns:
        (len(times), len(vector)) array; row i is exp(-times[i] A) v.
    """
    order = np.argsort(times, kind="stable")
    states = np.empty((len(times), vector.size), dtype=np.float64)
    current, now = np.asarray(vector, dtype=np.float64), 0.0
    for position in order:
        step = float(times[position]) - now
        if step > 0:
            pieces, dimension = plan(step * spectral_bound / 4, tolerance, max_dimension)
            for _ in range(pieces):
                current = _lanczos_step(apply, current, step / pieces, dimension)
            now = float(times[position])
        states[position] = current
    return states


def plan(rho: float, tolerance: float, max_dimension: int) -> tuple[int, int]:
    """(pieces, dimension) for a step whose ``t A`` has its spectrum in ``[0, 4 rho]``.

    Args:
        rho: a quarter of the step's ``t * spectral bound``.
        tolerance: wanted error bound.
        max_dimension: largest dimension allowed.

    Returns:
        The fewest equal pieces whose dimension (from the bound) fits, and that dimension.
    """
    dimension = _dimension(rho, tolerance, max_dimension)
    if dimension is not None:
        return 1, dimension
    low, high = 0.0, rho  # the largest piece that fits lies in (low, high)
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (
            (middle, high) if _dimension(middle, tolerance, max_dimension) else (low, middle)
        )
    pieces = math.ceil(rho / max(low, 1e-300))
    return pieces, _dimension(rho / pieces, tolerance, max_dimension) or max_dimension


def _dimension(rho: float, tolerance: float, max_dimension: int) -> int | None:
    """Smallest m whose Hochbruck-Lubich bound is below ``tolerance`` (None: above max)."""
    if rho <= 0:
        return 1
    target = math.log(tolerance)
    for m in range(1, max_dimension + 1):
        if m >= 2 * rho:
            log_bound = math.log(10 / rho) - rho + m * (1 + math.log(rho / m))
        elif m * m >= 4 * rho:
            log_bound = math.log(10) - m * m / (5 * rho)
        else:
            continue
        if log_bound <= target:
            return m
    return None


def _lanczos_step(apply, vector: np.ndarray, time: float, dimension: int) -> np.ndarray:
    """exp(-time A) vector from a Lanczos basis of ``dimension`` vectors (fewer if exact)."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        return vector.copy()
    basis = np.empty((dimension, vector.size), dtype=np.float64)
    basis[0] = vector / norm
    diagonal: list[float] = []
    off: list[float] = []
    for j in range(dimension):
        w = apply(basis[j])
        alpha = float(basis[j] @ w)
        diagonal.append(alpha)
        if j + 1 == dimension:
            break
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        if beta <= 1e-14 * max(abs(alpha), 1.0):  # invariant subspace: exact
            break
        off.append(beta)
        basis[j + 1] = w / beta
    size = len(diagonal)
    if size == 1:
        coefficients = np.exp(-time * np.asarray(diagonal))
    else:
        values, vectors = scipy.linalg.eigh_tridiagonal(np.asarray(diagonal), np.asarray(off))
        coefficients = vectors @ (np.exp(-time * values) * vectors[0])
    return norm * (basis[:size].T @ coefficients)
