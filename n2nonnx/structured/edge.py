"""EDGE: hash-based (conditional) mutual information, vectorised in numpy.

The Ensemble Dependency Graph Estimator (Noshad, Zeng & Hero, 2019) hashes each variable's
samples into buckets with a locality-sensitive hash, counts how many samples share a
bucket of X, of Y and of the pair, and sums ``N_ij / N * log(N * N_ij / (N_i * M_j))`` over
the edges of that dependence graph; several randomly shifted hashes form an ensemble.

What this implementation does (every choice documented, no Python loop over samples):

- p-stable LSH: a variable of ``d`` dimensions is projected onto
  ``d' = min(d, floor(log2(N / 10)))`` Gaussian directions scaled by ``1 / (std * sqrt(d))``
  (as in the authors' ``gen_W``), then each projected coordinate is cut by
  ``floor((v + b) / eps)``.
- Bandwidth ``eps`` per projected coordinate: ``3 * d' * gamma`` times the mean distance to
  the k-th neighbour along that coordinate, ``k = 0.43 N^(2/3 + 0.17 d'/(d'+1))`` (the
  authors' rule). The k-th neighbour distance is approximated by half the width of the
  window of ``k`` sorted neighbours around each point (one sort, no kNN search).
- The bucket of a sample is its integer code vector, hashed to one int64 by a random odd
  multiplier per coordinate (collisions have probability about ``N^2 / 2^64``).
- Ensemble: ``ensemble`` hashes with shifts ``b = j / ensemble * eps`` (the authors'
  deterministic shifts); the estimate is their mean. The authors clip each edge's
  pointwise term to ``[0.001, U]`` and re-tune ``gamma`` from a first estimate; neither is
  done here (the floor biases independent variables upwards).
- Entropies of bucket ids are plug-in estimates with the Miller-Madow term ``(K - 1) / 2N``
  (K occupied buckets).
- Conditional MI ``I(X; Y | Z)`` is ``H(X,Z) + H(Y,Z) - H(X,Y,Z) - H(Z)`` over the hashed
  variables, the buckets of a pair being the pairs of buckets.
- ``debias`` (default): the same estimate with Y's samples randomly re-paired is
  subtracted. Hash buckets of several dimensions are sparse, and the plug-in estimate of
  independent variables is then well above zero (0.2 nats for 4-D Gaussians at 2500
  samples); the re-paired estimate measures that bias with the same buckets.
- Estimates are clipped at 0.

Results are in nats. Accuracy, checked by the tests at 2500 samples: for 1-D correlated
Gaussians within 0.06 nats of ``-1/2 log(1 - rho^2)`` for rho in 0.3 .. 0.9; below 0.02
nats for independent variables of 1, 4 and 16 dimensions. Several-dimensional MI is
strongly underestimated (4-D, rho = 0.9: about 0.65 of 3.3 nats: the random projections of
X and Y are drawn independently, as in EDGE) but increases with the dependence, which is
what ranking connections needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_MIX_BITS = 64


@dataclass(frozen=True)
class HashedVariable:
    """A variable's samples as bucket ids, one row per ensemble member.

    Attributes:
        codes: ``(ensemble, N)`` int64 bucket ids, numbered 0..K-1 in each row.
    """

    codes: np.ndarray

    @property
    def samples(self) -> int:
        """The number of samples ``N`` each row holds."""
        return int(self.codes.shape[1])


def projected_dimensions(samples: int, dimensions: int) -> int:
    """The number of p-stable projections for ``dimensions`` features and ``samples`` samples."""
    return max(
        1,
        min(dimensions, int(math.floor(math.log2(max(samples, 2) / 10.0))) if samples > 20 else 1),
    )


def neighbour_distance(column: np.ndarray, k: int) -> float:
    """Mean distance to the k-th neighbour along one coordinate (sorted-window approximation)."""
    values = np.sort(column)
    n = len(values)
    k = int(min(max(k, 1), n - 1))
    half = max(k // 2, 1)
    widths = (
        values[2 * half :] - values[: n - 2 * half] if n > 2 * half else values[-1:] - values[:1]
    )
    return float(np.mean(widths) / 2.0)


def hash_variable(
    values: np.ndarray,
    rng: np.random.Generator,
    *,
    ensemble: int = 5,
    gamma: float = 1.0,
) -> HashedVariable:
    """Hash the samples of one variable into EDGE buckets.

    Args:
        values: ``(N,)`` or ``(N, d)`` samples.
        rng: the generator of the projection and the hash multipliers.
        ensemble: number of shifted hashes.
        gamma: smoothness factor of the bandwidth (larger: coarser buckets).

    Returns:
        The bucket ids.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n, d = x.shape
    reduced = projected_dimensions(n, d)
    spread = x.std(axis=0)
    spread[spread < 1e-4] = 1.0
    scale = 1.0 / (spread[:, None] * math.sqrt(d))
    projection = rng.standard_normal((d, reduced)) * scale
    projected = (x - x.mean(axis=0)) @ projection
    k = int(math.floor(0.43 * n ** (2 / 3 + 0.17 * reduced / (reduced + 1))))
    eps = np.array([neighbour_distance(projected[:, j], k) for j in range(reduced)])
    eps = eps * 3 * reduced * gamma + 1e-4
    multipliers = rng.integers(1, 2**62, size=reduced, dtype=np.int64) | 1
    codes = np.empty((ensemble, n), dtype=np.int64)
    for member in range(ensemble):
        shift = member / ensemble * eps
        cells = np.floor((projected + shift) / eps).astype(np.int64)
        with np.errstate(over="ignore"):
            codes[member] = np.unique((cells * multipliers).sum(axis=1), return_inverse=True)[
                1
            ].reshape(-1)
    return HashedVariable(codes)


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids renumbered 0..K-1, and the count of each bucket."""
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64), counts


def _entropy_of_counts(counts: np.ndarray) -> float:
    """Entropy (nats) of bucket counts: plug-in plus the Miller-Madow term (K-1)/2N."""
    counts = counts[counts > 0]
    total = counts.sum()
    p = counts / total
    return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2.0 * total))


def _joint(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids and counts of the pair ``(a, b)`` of ids numbered from 0.

    The ids are dense when returned by ``np.unique``; the counts may hold zeros.
    """
    combined = a * (int(b.max()) + 1) + b
    if combined.max() < 8 * len(combined):
        return combined, np.bincount(combined)
    return _dense(combined)


def _mi_rows(x: np.ndarray, y: np.ndarray, null: np.ndarray | None) -> float:
    marginals = _entropy_of_counts(np.bincount(x)) + _entropy_of_counts(np.bincount(y))
    value = marginals - _entropy_of_counts(_joint(x, y)[1])
    if null is not None:
        value -= marginals - _entropy_of_counts(_joint(x, y[null])[1])
    return value


def _cmi_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray, null: np.ndarray | None) -> float:
    xz, nxz = _joint(x, z)
    h_xz, h_z = _entropy_of_counts(nxz), _entropy_of_counts(np.bincount(z))

    def conditional(y_row: np.ndarray) -> float:
        return (
            h_xz
            + _entropy_of_counts(_joint(y_row, z)[1])
            - _entropy_of_counts(_joint(xz, y_row)[1])
            - h_z
        )

    value = conditional(y)
    if null is not None:
        value -= conditional(y[null])
    return value


def mi_hashed(x: HashedVariable, y: HashedVariable, *, null: np.ndarray | None = None) -> float:
    """EDGE mutual information (nats) of two hashed variables: the ensemble mean.

    Args:
        x: the first hashed variable.
        y: the second hashed variable, of the same samples as ``x``.
        null: a permutation of the samples; when given, the estimate for ``y`` shuffled by
            it (the bias of independent variables with these buckets) is subtracted.

    Returns:
        The estimate, clipped at 0.
    """
    _check(x, y)
    values = [_mi_rows(cx, cy, null) for cx, cy in zip(x.codes, y.codes, strict=True)]
    return max(float(np.mean(values)), 0.0)


def cmi_hashed(
    x: HashedVariable, y: HashedVariable, z: HashedVariable, *, null: np.ndarray | None = None
) -> float:
    """EDGE conditional mutual information ``I(X; Y | Z)`` (nats) of hashed variables.

    Args:
        x: the hashed variable ``X``.
        y: the hashed variable ``Y``, of the same samples as ``x``.
        z: the hashed conditioning variable ``Z``, of the same samples.
        null: a permutation of the samples; when given, the estimate with ``y`` shuffled
            by it is subtracted (see :func:`mi_hashed`).

    Returns:
        The estimate, clipped at 0.
    """
    _check(x, y, z)
    values = [
        _cmi_rows(cx, cy, cz, null) for cx, cy, cz in zip(x.codes, y.codes, z.codes, strict=True)
    ]
    return max(float(np.mean(values)), 0.0)


def edge_mi(
    x: np.ndarray, y: np.ndarray, *, ensemble: int = 5, debias: bool = True, seed: int = 0
) -> float:
    """Mutual information of two sample sets with EDGE.

    Args:
        x: ``(N,)`` or ``(N, dx)`` samples.
        y: ``(N,)`` or ``(N, dy)`` samples, rows paired with ``x``.
        ensemble: number of shifted hashes averaged.
        debias: subtract the estimate for ``y`` randomly re-paired with ``x``.
        seed: seed of the random projections and of the re-pairing.

    Returns:
        The estimate in nats (>= 0).
    """
    rng = np.random.default_rng(seed)
    hx, hy = hash_variable(x, rng, ensemble=ensemble), hash_variable(y, rng, ensemble=ensemble)
    return mi_hashed(hx, hy, null=rng.permutation(hx.samples) if debias else None)


def edge_cmi(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    ensemble: int = 5,
    debias: bool = True,
    seed: int = 0,
) -> float:
    """Conditional mutual information ``I(X; Y | Z)`` with EDGE (see the module docstring).

    Args:
        x: ``(N,)`` or ``(N, dx)`` samples of ``X``.
        y: ``(N,)`` or ``(N, dy)`` samples of ``Y``, rows paired with ``x``.
        z: ``(N,)`` or ``(N, dz)`` samples of the conditioning ``Z``, rows paired with ``x``.
        ensemble: number of shifted hashes averaged.
        debias: subtract the estimate with ``y`` randomly re-paired.
        seed: seed of the random projections and of the re-pairing.

    Returns:
        The estimate in nats (>= 0).
    """
    rng = np.random.default_rng(seed)
    hx, hy, hz = (hash_variable(v, rng, ensemble=ensemble) for v in (x, y, z))
    return cmi_hashed(hx, hy, hz, null=rng.permutation(hx.samples) if debias else None)


def _check(*variables: HashedVariable) -> None:
    shapes = {v.codes.shape for v in variables}
    if len(shapes) != 1:
        raise ValueError(f"hashed variables disagree in (ensemble, samples): {sorted(shapes)}")
