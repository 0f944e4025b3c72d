"""Conditional mutual information estimators for SNACS, by name: ``edge``, ``knn``, ``binned``.

Each estimator first *encodes* a variable's samples (so that a variable used in many
estimates is prepared once) and then estimates ``I(X; Y | Z)`` from encodings (``Z`` may
be None: plain MI).

- ``edge`` (default, the authors' choice): hash-based EDGE, see :mod:`.edge`.
- ``knn``: the Frenzel-Pompe k-nearest-neighbour CMI estimator (the conditional form of
  Kraskov-Stoegbauer-Grassberger), k = 5, max-norm, on standardised columns; much slower
  in many dimensions.
- ``binned``: each variable summarised by the mean of its standardised columns, cut into
  ``round(N^(1/3))`` equal-frequency bins; plug-in CMI with the Miller-Madow term. Crude,
  fast, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.registry import name_registry
from n2nonnx.structured.edge import HashedVariable, cmi_hashed, hash_variable, mi_hashed

ESTIMATORS: dict[str, Callable[..., Any]] = {}

estimator = name_registry(ESTIMATORS, "estimator")  # @estimator("edge") registers a class


def make_estimator(name: str, samples: int, seed: int) -> Any:
    """An estimator instance for ``samples`` paired samples.

    Raises:
        InvalidArgumentError: unknown name.
    """
    if name not in ESTIMATORS:
        raise InvalidArgumentError(
            f"unknown MI estimator {name!r}; choose from {', '.join(sorted(ESTIMATORS))}"
        )
    return ESTIMATORS[name](samples, seed)


def _standardised(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    spread = x.std(axis=0)
    spread[spread < 1e-12] = 1.0
    return (x - x.mean(axis=0)) / spread


@estimator("edge")
class EdgeEstimator:
    """EDGE with 5 shifted hashes and the re-paired bias correction."""

    def __init__(self, samples: int, seed: int, ensemble: int = 5) -> None:
        self.rng = np.random.default_rng(seed)
        self.null = self.rng.permutation(samples)
        self.ensemble = ensemble

    def encode(self, values: np.ndarray) -> HashedVariable:
        """The variable hashed into buckets by the shared random projections.

        Args:
            values: ``(N,)`` or ``(N, d)`` samples of one variable.

        Returns:
            Its :class:`HashedVariable` with ``ensemble`` rows.
        """
        return hash_variable(values, self.rng, ensemble=self.ensemble)

    def cmi(self, x: HashedVariable, y: HashedVariable, z: HashedVariable | None) -> float:
        """``I(X; Y | Z)`` by EDGE, with the estimate for a fixed re-pairing subtracted.

        Args:
            x: the encoding of ``X``.
            y: the encoding of ``Y``, of the same samples.
            z: the encoding of the conditioning ``Z``, or ``None`` for plain MI.

        Returns:
            The estimate in nats (>= 0).
        """
        if z is None:
            return mi_hashed(x, y, null=self.null)
        return cmi_hashed(x, y, z, null=self.null)


@estimator("binned")
class BinnedEstimator:
    """Equal-frequency bins of each variable's mean standardised column."""

    def __init__(self, samples: int, seed: int) -> None:
        self.bins = max(2, int(round(samples ** (1 / 3))))

    def encode(self, values: np.ndarray) -> HashedVariable:
        """The variable as the equal-frequency bin of its mean standardised column.

        Args:
            values: ``(N,)`` or ``(N, d)`` samples of one variable.

        Returns:
            A one-row :class:`HashedVariable` of bin ids.
        """
        summary = _standardised(values).mean(axis=1)
        ranks = np.argsort(np.argsort(summary, kind="stable"), kind="stable")
        return HashedVariable((ranks * self.bins // len(summary)).astype(np.int64)[None, :])

    def cmi(self, x: HashedVariable, y: HashedVariable, z: HashedVariable | None) -> float:
        """Plug-in ``I(X; Y | Z)`` of the bin ids.

        Args:
            x: the encoding of ``X``.
            y: the encoding of ``Y``, of the same samples.
            z: the encoding of the conditioning ``Z``, or ``None`` for plain MI.

        Returns:
            The estimate in nats (>= 0).
        """
        return mi_hashed(x, y) if z is None else cmi_hashed(x, y, z)


@estimator("knn")
class KnnEstimator:
    """Frenzel-Pompe kNN conditional mutual information (k = 5, max-norm)."""

    def __init__(self, samples: int, seed: int, k: int = 5) -> None:
        self.rng = np.random.default_rng(seed)
        self.k = k

    def encode(self, values: np.ndarray) -> np.ndarray:
        """The variable standardised, with tiny seeded noise that breaks ties.

        Args:
            values: ``(N,)`` or ``(N, d)`` samples of one variable.

        Returns:
            ``(N, d)`` float64 columns.
        """
        x = _standardised(values)
        return x + 1e-10 * self.rng.standard_normal(x.shape)  # break ties (dead ReLU units)

    def cmi(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> float:
        """Frenzel-Pompe kNN ``I(X; Y | Z)`` in the max-norm.

        Args:
            x: the encoding of ``X``.
            y: the encoding of ``Y``, of the same samples.
            z: the encoding of the conditioning ``Z``, or ``None`` for plain MI.

        Returns:
            The estimate in nats, clipped at 0.
        """
        from scipy.spatial import cKDTree
        from scipy.special import digamma

        joint = np.hstack([x, y] if z is None else [x, y, z])
        radius = cKDTree(joint).query(joint, k=self.k + 1, p=np.inf)[0][:, -1]
        radius = np.nextafter(radius, 0)

        def counts(parts: list[np.ndarray]) -> np.ndarray:
            space = np.hstack(parts)
            return cKDTree(space).query_ball_point(space, radius, p=np.inf, return_length=True) - 1

        if z is None:
            value = (
                digamma(self.k)
                + digamma(len(x))
                - np.mean(digamma(counts([x]) + 1) + digamma(counts([y]) + 1))
            )
        else:
            value = digamma(self.k) - np.mean(
                digamma(counts([x, z]) + 1) + digamma(counts([y, z]) + 1) - digamma(counts([z]) + 1)
            )
        return max(float(value), 0.0)
