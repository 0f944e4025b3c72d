"""Heat diffusion on a unit graph: S(t) = exp(-tL) a, its saturation, delta and the scree.

Everything here works on a symmetric ``scipy.sparse`` adjacency matrix ``W`` (binary or
weighted) and follows the N2NSkip paper's section 3.2, eqs. 3-7:

* ``L = D - W`` (unnormalised Laplacian, :func:`scipy.sparse.csgraph.laplacian`);
* ``S(t) = exp(-tL) a`` with ``a = 1`` on the input nodes (:func:`heat_state`);
* ``S(inf)``: per connected component ``C``, ``|inputs in C| / |C|`` on every node of
  ``C``, exact from :func:`scipy.sparse.csgraph.connected_components`
  (:func:`saturation_state`);
* ``delta(t) = ||S_ref(t) - S(t)||_2`` (:func:`heat_delta`);
* the scree ``alpha(beta, t)`` of eq. 7 from the Laplacian eigenvalues (:func:`scree`).

How S(t) is computed. :func:`scipy.sparse.linalg.expm_multiply` acts with ``exp(-tL)``
on ``a``; no dense n x n matrix is formed. Evenly spaced times starting at 0 are one
interval call; any other set of times is one call per increment,
``S(t_k) = exp(-(t_k - t_{k-1}) L) S(t_{k-1})``, so the total work is that of a single
call up to ``max(times)`` (about 1.2 x, measured). expm_multiply (Al-Mohy & Higham's
truncated Taylor series) needs about 7 matrix-vector products per unit of
``max(times) * max degree``: very large t on graphs of large degree is slow, which is
why the saturation value comes from the components instead.

Implicit graphs. Every function that takes ``adjacency`` also takes an
:class:`~n2nonnx.connectivity.implicit.ImplicitFlow` (a dense network's unit graph kept as
complete bipartite blocks; its undirected graph is meant) and never expands it. Units with
identical neighbourhoods form classes (about one per layer in a dense network): the
*complete* spectrum and S(t) at any t come exactly from a classes x classes quotient
matrix (:class:`~n2nonnx.connectivity.implicit.ClassQuotient`); with more than
``DENSE_LIMIT`` classes, S(t) comes from Lanczos on the Laplacian as an operator
(:mod:`~n2nonnx.connectivity.krylov`, each product O(units + explicit edges)) and the
smallest eigenvalues from eigsh on it. Components come from the blocks.

How the spectrum is computed. Up to ``DENSE_LIMIT`` nodes all eigenvalues come from
``scipy.linalg.eigh``; above it only the smallest ``k`` (default ``SPARSE_EIGENVALUES``)
come from :func:`scipy.sparse.linalg.eigsh` (Lanczos, ``which="SA"``), and the scree's
denominator is then the sum over those k eigenvalues: exact in the limit of large t,
an over-estimate of alpha at small t. The report says which was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.sparse.linalg import ArpackNoConvergence, eigsh, expm_multiply

from n2nonnx.connectivity import krylov
from n2nonnx.connectivity.implicit import ClassQuotient, ImplicitFlow
from n2nonnx.errors import InvalidArgumentError

DENSE_LIMIT = 2000
"""Largest node count for which the spectrum comes from a dense n x n eigh."""

SPARSE_EIGENVALUES = 16
"""Eigenvalues computed by eigsh for the scree of a graph above DENSE_LIMIT nodes.

eigsh converges slowly at the bottom of a Laplacian's spectrum (shift-invert would need a
sparse LU whose fill-in is prohibitive on these layered graphs): about a minute for 16
eigenvalues of a 27,563-unit graph with 2.3 million non-zeros on one core.
"""


def _as_adjacency(adjacency) -> sp.csr_array:
    """Check that ``adjacency`` is a square matrix; return it as float64 CSR, int32 indices."""
    matrix = compact(sp.csr_array(adjacency, dtype=np.float64))
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InvalidArgumentError(f"adjacency must be a square matrix, got shape {matrix.shape}")
    return matrix


def compact(matrix: sp.csr_array) -> sp.csr_array:
    """The same CSR matrix with int32 indices where they fit (a third less memory).

    Args:
        matrix: a CSR array.

    Returns:
        ``matrix`` itself if its indices are already int32 or too large, else a CSR
        array sharing its data with int32 index arrays.
    """
    limit = np.iinfo(np.int32).max
    if matrix.indices.dtype == np.int32 or max(matrix.nnz, *matrix.shape) >= limit:
        return matrix
    return sp.csr_array(
        (matrix.data, matrix.indices.astype(np.int32), matrix.indptr.astype(np.int32)),
        shape=matrix.shape,
    )


def _as_times(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Check a list of diffusion times (finite, >= 0) and return it as a float array."""
    values = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise InvalidArgumentError("times must be a non-empty list of numbers")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InvalidArgumentError(f"times must be finite and >= 0, got {values.tolist()}")
    return values


def laplacian(adjacency):
    """Unnormalised graph Laplacian ``L = D - W`` (eq. 3).

    Args:
        adjacency: symmetric sparse or dense (n, n) matrix of non-negative edge weights,
            or an :class:`ImplicitFlow`.

    Returns:
        L as a float64 CSR array (a symmetric ``LinearOperator`` for an ImplicitFlow).
    """
    if isinstance(adjacency, ImplicitFlow):
        return adjacency.laplacian_operator()
    return sp.csr_array(csgraph.laplacian(_as_adjacency(adjacency)))


def heat_sources(n_nodes: int, input_nodes: Sequence[int] | np.ndarray) -> np.ndarray:
    """The initial heat vector ``a`` of eq. 5: 1 on the input nodes, 0 elsewhere.

    Args:
        n_nodes: number of nodes of the graph.
        input_nodes: indices of the input nodes.

    Returns:
        float64 vector of length ``n_nodes``.
    """
    sources = np.zeros(n_nodes, dtype=np.float64)
    sources[np.asarray(input_nodes, dtype=np.int64)] = 1.0
    return sources


def _evenly_spaced_from_zero(times: np.ndarray) -> bool:
    """True if ``times`` is 0, h, 2h, ... (one expm_multiply interval call covers it)."""
    if times.size < 2 or times[0] != 0.0:
        return False
    steps = np.diff(times)
    return bool(steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-12, atol=0.0))


def heat_state(adjacency, sources: np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Heat on every node at every time, ``S(t) = exp(-tL) a`` (eqs. 4-5).

    Args:
        adjacency: symmetric (n, n) adjacency matrix (sparse or dense), or an
            :class:`ImplicitFlow` (then by Lanczos, see the module docstring).
        sources: initial heat ``a`` (length n), e.g. from :func:`heat_sources`.
        times: diffusion times (>= 0), in any order.

    Returns:
        (len(times), n) array; row i is S(times[i]).
    """
    times = _as_times(times)
    sources = np.asarray(sources, dtype=np.float64)
    if isinstance(adjacency, ImplicitFlow):
        _check_sources(sources, adjacency.n_nodes)
        quotient = ClassQuotient.of(adjacency, DENSE_LIMIT, marks=sources)
        if quotient is not None:
            return quotient.heat(sources, times)
        bound = 2.0 * float(adjacency.degrees.max(initial=0.0))
        return krylov.expm_action(adjacency.laplacian_operator().matvec, sources, times, bound)
    matrix = _as_adjacency(adjacency)
    _check_sources(sources, matrix.shape[0])
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    negative = compact(sp.csr_array(matrix - sp.diags_array(degree, format="csr")))
    del matrix, adjacency  # only -L is needed from here on (one large matrix less)
    return _heat_state_krylov(negative, sources, times)


def _check_sources(sources: np.ndarray, n: int) -> None:
    if sources.shape != (n,):
        raise InvalidArgumentError(f"sources must have length {n}, got shape {sources.shape}")


def _heat_state_krylov(
    negative: sp.csr_array, sources: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """S(t) with expm_multiply (see the module docstring).

    expm_multiply shifts its matrix by ``traceA / n`` times the identity before bounding
    its 1-norm; for ``-L`` the shift ``-max degree`` gives the smallest norm (the largest
    degree, instead of about twice it with the true trace), so ``traceA`` is passed as
    ``-n * max degree``: the same result, fewer matrix-vector products.
    """
    shift = negative.shape[0] * float(negative.diagonal().min(initial=0.0))
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    states = np.empty((times.size, sources.size), dtype=np.float64)
    if _evenly_spaced_from_zero(ordered):
        states[order] = expm_multiply(
            negative,
            sources,
            start=0.0,
            stop=float(ordered[-1]),
            num=ordered.size,
            endpoint=True,
            traceA=shift,
        )
        return states
    current, now = sources, 0.0
    for position, time in zip(order, ordered, strict=True):
        if time > now:
            step = float(time - now)
            current = expm_multiply(step * negative, current, traceA=step * shift)
            now = float(time)
        states[position] = current
    return states


def connected_components(adjacency) -> tuple[int, np.ndarray]:
    """Connected components of the (undirected) graph.

    Args:
        adjacency: (n, n) adjacency matrix, or an :class:`ImplicitFlow`.

    Returns:
        (number of components, component label of every node).
    """
    if isinstance(adjacency, ImplicitFlow):
        return adjacency.connected_components()
    count, labels = csgraph.connected_components(_as_adjacency(adjacency), directed=False)
    return int(count), labels


def saturation_state(adjacency, sources: np.ndarray) -> np.ndarray:
    """``S(t -> inf)`` exactly: per component C, ``sum(a over C) / |C|`` on every node of C.

    With ``a`` binary this is ``|inputs in C| / |C|`` (the N2NSkip paper, Subramaniam & Sharma 2020, section 3.2).

    Args:
        adjacency: symmetric (n, n) adjacency matrix, or an :class:`ImplicitFlow`.
        sources: initial heat ``a`` (length n).

    Returns:
        float64 vector of length n.
    """
    _, labels = connected_components(adjacency)
    sources = np.asarray(sources, dtype=np.float64)
    heat = np.bincount(labels, weights=sources)
    size = np.bincount(labels)
    return (heat / size)[labels]


def heat_delta(reference_state: np.ndarray, model_state: np.ndarray) -> np.ndarray | float:
    """``delta = ||S_ref - S_model||_2`` (eq. 6), over the last axis.

    Args:
        reference_state: S of the reference, (n,) or (len(times), n).
        model_state: S of the model, same shape and node order.

    Returns:
        a float for vectors, an array of len(times) for stacks of states.
    """
    reference_state = np.asarray(reference_state, dtype=np.float64)
    model_state = np.asarray(model_state, dtype=np.float64)
    if reference_state.shape != model_state.shape:
        raise InvalidArgumentError(
            "reference and model have different node sets: heat states of shape "
            f"{reference_state.shape} and {model_state.shape}"
        )
    delta = np.linalg.norm(reference_state - model_state, axis=-1)
    return float(delta) if np.ndim(delta) == 0 else delta


def laplacian_spectrum(
    adjacency,
    *,
    k: int | None = None,
    dense_limit: int = DENSE_LIMIT,
) -> tuple[np.ndarray, bool]:
    """Eigenvalues of L in ascending order: all of them, or the smallest k of a large graph.

    Args:
        adjacency: symmetric (n, n) adjacency matrix, or an :class:`ImplicitFlow`.
        k: number of smallest eigenvalues wanted on a graph above ``dense_limit`` nodes
            (default ``SPARSE_EIGENVALUES``); ignored for small graphs.
        dense_limit: graphs up to this size use dense ``scipy.linalg.eigh``; an
            ImplicitFlow with up to this many unit classes gets its complete spectrum
            from :class:`~n2nonnx.connectivity.implicit.ClassQuotient`.

    Returns:
        (eigenvalues ascending, complete) where complete is False when only the
        smallest k were computed (scipy.sparse.linalg.eigsh).
    """
    if isinstance(adjacency, ImplicitFlow):
        quotient = ClassQuotient.of(adjacency, dense_limit)
        if quotient is not None:
            return _zero_floor(quotient.spectrum()), True
    lap = laplacian(adjacency)
    n = lap.shape[0]
    if n <= dense_limit and not isinstance(adjacency, ImplicitFlow):
        values = scipy.linalg.eigh(lap.toarray(), eigvals_only=True, driver="evd")
        return _zero_floor(values), True
    wanted = min(k or SPARSE_EIGENVALUES, n - 2)
    start = np.random.default_rng(0).standard_normal(n)
    try:
        values = eigsh(
            lap,
            k=wanted,
            which="SA",
            v0=start,
            return_eigenvectors=False,
            tol=1e-8,
            maxiter=max(20 * n, 10_000),
        )
    except ArpackNoConvergence as error:  # keep what converged
        values = error.eigenvalues
    return _zero_floor(values), False


def _zero_floor(values: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues with rounding noise around 0 set to exactly 0."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    floor = 1e-10 * max(1.0, float(np.abs(values).max(initial=0.0)))
    return np.where(values < floor, 0.0, values)


def spectral_gap(eigenvalues: np.ndarray) -> float | None:
    """lambda_2, the second smallest Laplacian eigenvalue (0 when the graph is disconnected).

    Args:
        eigenvalues: ascending Laplacian eigenvalues (at least the two smallest).

    Returns:
        lambda_2, or None when fewer than two eigenvalues are given.
    """
    return float(eigenvalues[1]) if len(eigenvalues) >= 2 else None


def scree(eigenvalues: np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scree ``alpha(beta, t)`` of eq. 7 for beta = 1 .. len(eigenvalues) - 1.

    ``alpha(beta, t) = sum_{k=2}^{beta+1} exp(-t l_k) / sum_{k=2}^{n} exp(-t l_k)``, with
    the eigenvalues ascending (l_1 = 0). Computed with exp(-t (l_k - l_2)) so that large t
    does not underflow.

    Args:
        eigenvalues: ascending Laplacian eigenvalues (all n, or the smallest k: then the
            denominator runs over those k only).
        times: diffusion times.

    Returns:
        (len(times), len(eigenvalues) - 1) array; column beta - 1 is alpha(beta, t).
    """
    times = _as_times(times)
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))[1:]
    if values.size == 0:
        return np.zeros((times.size, 0))
    weights = np.exp(-np.outer(times, values - values[0]))
    return np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
