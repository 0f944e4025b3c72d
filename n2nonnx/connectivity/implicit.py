"""A unit graph kept as complete bipartite blocks (bicliques) instead of a list of edges.

A dense layer joins every unit that feeds it to every one of its units: between two layers
the edges form a complete bipartite block, and a dense VGG19 has 25 million of them in about
twenty such blocks. :class:`ImplicitFlow` stores the directed flow as

    F = senders @ receivers.T + rest

where column k of ``senders`` (n x h, 0/1) marks the units that send into biclique k,
column k of ``receivers`` the units it reaches, and ``rest`` holds the directed edges that
are in no biclique (a pruned layer's). No edge lies in two of these parts, so F is binary.
One product with ``W = F + F.T`` or ``L = D - W`` costs O(units + edges of ``rest``), not
O(edges): a biclique acts on a vector as a sum over its senders handed to each receiver
(:meth:`ImplicitFlow.adjacency_matvec`). Degrees, connected components and reachability
come from the same blocks (a biclique's hub node joins its senders to its receivers), and
the full Laplacian spectrum and the heat state exactly from the units' equivalence classes
(:class:`ClassQuotient`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.sparse.linalg import LinearOperator


def _binary(matrix, shape: tuple[int, int]) -> sp.csr_array:
    """``matrix`` as a float64 CSR array of shape ``shape`` with every stored value 1."""
    result = sp.csr_array(matrix, shape=shape, dtype=np.float64)
    result.sum_duplicates()
    result.eliminate_zeros()
    result.data[:] = 1.0
    return result


@dataclass(frozen=True, eq=False)
class ImplicitFlow:
    """Directed binary flow ``F = senders @ receivers.T + rest`` (see the module docstring).

    Attributes:
        senders: (n, h) 0/1 CSR; ``senders[s, k] = 1`` when unit s sends into biclique k.
        receivers: (n, h) 0/1 CSR; ``receivers[t, k] = 1`` when biclique k reaches unit t.
        rest: (n, n) 0/1 CSR of the directed edges in no biclique.
    """

    senders: sp.csr_array
    receivers: sp.csr_array
    rest: sp.csr_array

    @classmethod
    def from_parts(cls, n_nodes: int, senders, receivers, rest=None) -> ImplicitFlow:
        """Build from (unit, biclique) pairs; bicliques with an empty side are dropped.

        Args:
            n_nodes: number of units.
            senders: (units, biclique ids) pair of integer arrays.
            receivers: (units, biclique ids) pair of integer arrays.
            rest: (source units, target units) of the other edges, or None.

        Returns:
            The flow, with binary matrices and no empty biclique.
        """
        count = 1 + max(
            (int(np.max(ids)) for _, ids in (senders, receivers) if len(ids)), default=-1
        )

        def incidence(pairs) -> sp.csr_array:
            units, ids = (np.asarray(part, dtype=np.int64) for part in pairs)
            return _binary((np.ones(units.size), (units, ids)), (n_nodes, count))

        send, receive = incidence(senders), incidence(receivers)
        used = np.flatnonzero(
            (np.diff(send.tocsc().indptr) > 0) & (np.diff(receive.tocsc().indptr) > 0)
        )
        if used.size < count:
            send, receive = send[:, used], receive[:, used]
        if rest is None:
            rest_matrix = sp.csr_array((n_nodes, n_nodes))
        else:
            rows, cols = (np.asarray(part, dtype=np.int64) for part in rest)
            rest_matrix = _binary((np.ones(rows.size), (rows, cols)), (n_nodes, n_nodes))
        return cls(sp.csr_array(send), sp.csr_array(receive), rest_matrix)

    @property
    def n_nodes(self) -> int:
        """Number of units."""
        return int(self.senders.shape[0])

    @property
    def n_bicliques(self) -> int:
        """Number of complete bipartite blocks."""
        return int(self.senders.shape[1])

    @cached_property
    def n_edges(self) -> int:
        """Number of directed edges (each undirected edge once)."""
        senders = np.asarray(self.senders.sum(axis=0)).ravel()
        receivers = np.asarray(self.receivers.sum(axis=0)).ravel()
        return int(np.dot(senders.astype(np.int64), receivers.astype(np.int64)) + self.rest.nnz)

    @cached_property
    def _transposes(self) -> tuple[sp.csr_array, sp.csr_array, sp.csr_array]:
        return (
            sp.csr_array(self.senders.T),
            sp.csr_array(self.receivers.T),
            sp.csr_array(self.rest.T),
        )

    def flow_matvec(self, x: np.ndarray) -> np.ndarray:
        """``F @ x`` (x may be a vector or an (n, k) block of vectors)."""
        _, receivers_t, _ = self._transposes
        return self.senders @ (receivers_t @ x) + self.rest @ x

    def flow_rmatvec(self, x: np.ndarray) -> np.ndarray:
        """``F.T @ x``."""
        senders_t, _, rest_t = self._transposes
        return self.receivers @ (senders_t @ x) + rest_t @ x

    def adjacency_matvec(self, x: np.ndarray) -> np.ndarray:
        """``W @ x`` with ``W = F + F.T``, the undirected graph's adjacency."""
        return self.flow_matvec(x) + self.flow_rmatvec(x)

    @cached_property
    def degrees(self) -> np.ndarray:
        """Degree of every unit in the undirected graph (row sums of W), exactly."""
        return self.adjacency_matvec(np.ones(self.n_nodes))

    def laplacian_operator(self) -> LinearOperator:
        """``L = D - W`` as a symmetric scipy LinearOperator (one product: O(units + rest))."""
        degrees = self.degrees

        def apply(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            scale = degrees if x.ndim == 1 else degrees[:, None]
            return scale * x - self.adjacency_matvec(x)

        n = self.n_nodes
        return LinearOperator(
            (n, n), matvec=apply, rmatvec=apply, matmat=apply, rmatmat=apply, dtype=np.float64
        )

    def hub_graph(self) -> sp.csr_array:
        """Directed (n + h, n + h) graph: unit -> hub k -> unit per biclique, plus ``rest``.

        A unit reaches another through a hub exactly when the flow has that edge, so
        components and reachability of the units are those of the flow.
        """
        n, h = self.n_nodes, self.n_bicliques
        if h == 0:
            return self.rest
        return sp.csr_array(
            sp.block_array(
                [[self.rest, self.senders], [sp.csr_array(self.receivers.T), None]],
                format="csr",
            ),
            shape=(n + h, n + h),
        )

    def connected_components(self) -> tuple[int, np.ndarray]:
        """(number of components, component label of every unit) of the undirected graph."""
        _, labels = csgraph.connected_components(self.hub_graph(), directed=False)
        units = labels[: self.n_nodes]
        _, relabelled = np.unique(units, return_inverse=True)
        return int(relabelled.max(initial=-1) + 1), relabelled.astype(np.int32)

    def to_csr(self) -> sp.csr_array:
        """The flow as an explicit (n, n) binary CSR matrix: O(edges) memory."""
        flow = sp.csr_array(self.senders @ sp.csr_array(self.receivers.T)) + self.rest
        return _binary(flow, flow.shape)

    def permuted(self, permutation: np.ndarray) -> ImplicitFlow:
        """The flow with unit ``permutation[i]`` renamed i.

        Args:
            permutation: new order of the old unit indices.

        Returns:
            The permuted flow.
        """
        return ImplicitFlow(
            sp.csr_array(self.senders[permutation]),
            sp.csr_array(self.receivers[permutation]),
            sp.csr_array(self.rest[permutation][:, permutation]),
        )

    def pixel_counts(self, pixel_of_unit: np.ndarray, pixels: int) -> np.ndarray:
        """Directed edges per (source pixel, target pixel), units binned into ``pixels``.

        Args:
            pixel_of_unit: pixel index (0 .. pixels - 1) of every unit.
            pixels: number of pixels along an axis.

        Returns:
            (pixels, pixels) float array of edge counts.
        """
        binning = sp.csr_array(
            (np.ones(self.n_nodes), (np.arange(self.n_nodes), pixel_of_unit)),
            shape=(self.n_nodes, pixels),
        )
        sending = sp.csr_array(binning.T @ self.senders)
        receiving = sp.csr_array(self.receivers.T @ binning)
        counts = (sending @ receiving).toarray()
        return counts + (binning.T @ self.rest @ binning).toarray()

    def equivalence_classes(self, marks: np.ndarray | None = None) -> np.ndarray:
        """Class label of every unit: units with identical neighbourhoods share a label.

        Two such units have identical rows in W, so they are never adjacent and every
        vector that is zero outside their class and sums to 0 on it is an eigenvector of
        L with eigenvalue their degree (:class:`ClassQuotient`).

        Args:
            marks: optional value per unit; units with different marks are never in one
                class (pass the heat sources to keep them constant on every class).

        Returns:
            int array of length n, labels 0 .. classes - 1 in order of first appearance.
        """
        rest_t = self._transposes[2]
        rows = sp.csr_array(
            sp.hstack([self.senders, self.receivers, self.rest, sp.csr_array(rest_t)], format="csr")
        )
        rows.sort_indices()
        indptr, indices = rows.indptr, rows.indices
        marked = None if marks is None else np.asarray(marks, dtype=np.float64)
        labels = np.empty(self.n_nodes, dtype=np.int64)
        seen: dict[tuple[bytes, float], int] = {}
        for unit in range(self.n_nodes):
            key = (
                indices[indptr[unit] : indptr[unit + 1]].tobytes(),
                0.0 if marked is None else float(marked[unit]),
            )
            labels[unit] = seen.setdefault(key, len(seen))
        return labels


@dataclass(frozen=True, eq=False)
class ClassQuotient:
    """The Laplacian reduced to the units' equivalence classes: exact spectrum and heat.

    With C the classes (identical neighbourhoods), the vectors constant on each class form
    an invariant subspace of L; on it L acts as the symmetric ``classes x classes`` matrix
    ``Q = diag(d_c) - M_cc' / sqrt(|c| |c'|)``, M the edge counts between classes. The
    complement is spanned by vectors summing to 0 within one class, eigenvectors with
    eigenvalue ``d_c`` (``|c| - 1`` of them per class). A dense network's graph has about
    one class per layer, so its whole spectrum, and ``exp(-tL) a`` for any ``a`` constant on
    the classes at any t, cost one small ``eigh``.

    Attributes:
        labels: class of every unit.
        sizes: units per class.
        degrees: degree of the units of each class.
        values: eigenvalues of Q (ascending; rounding noise around 0 set to 0).
        vectors: its orthonormal eigenvectors (columns).
    """

    labels: np.ndarray
    sizes: np.ndarray
    degrees: np.ndarray
    values: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(
        cls, flow: ImplicitFlow, dense_limit: int, marks: np.ndarray | None = None
    ) -> ClassQuotient | None:
        """The quotient of a flow's Laplacian, or None with more than ``dense_limit`` classes.

        Args:
            flow: the graph.
            dense_limit: largest number of classes for the dense eigh.
            marks: passed to :meth:`ImplicitFlow.equivalence_classes`.

        Returns:
            The quotient, or None.
        """
        labels = flow.equivalence_classes(marks)
        count = int(labels.max(initial=-1)) + 1
        if count > dense_limit:
            return None
        n = flow.n_nodes
        membership = sp.csr_array((np.ones(n), (np.arange(n), labels)), shape=(n, count))
        sizes = np.bincount(labels, minlength=count).astype(np.float64)
        degrees = np.bincount(labels, weights=flow.degrees, minlength=count) / sizes
        sending = sp.csr_array(membership.T @ flow.senders).toarray()
        receiving = sp.csr_array(flow.receivers.T @ membership).toarray()
        between = sending @ receiving + (membership.T @ flow.rest @ membership).toarray()
        between = between + between.T
        scale = 1.0 / np.sqrt(sizes)
        quotient = np.diag(degrees) - scale[:, None] * between * scale[None, :]
        values, vectors = scipy.linalg.eigh(quotient)
        floor = 1e-12 * max(1.0, float(np.abs(values).max(initial=0.0)))
        values = np.where(values < floor, 0.0, values)
        return cls(labels, sizes, degrees, values, vectors)

    def spectrum(self) -> np.ndarray:
        """All n eigenvalues of L in ascending order."""
        repeated = np.repeat(self.degrees, self.sizes.astype(np.int64) - 1)
        return np.sort(np.concatenate([self.values, repeated]))

    def heat(self, sources: np.ndarray, times: np.ndarray) -> np.ndarray:
        """``exp(-tL) a`` at every time, exactly, for ``a`` constant on every class.

        Args:
            sources: a (length n), constant on each class (classes built with it as marks).
            times: times (>= 0).

        Returns:
            (len(times), n) array.
        """
        per_class = np.bincount(self.labels, weights=sources, minlength=self.sizes.size)
        start = self.vectors.T @ (per_class / np.sqrt(self.sizes))
        decayed = np.exp(-np.outer(times, self.values)) * start[None, :]
        states = (decayed @ self.vectors.T) / np.sqrt(self.sizes)[None, :]
        return states[:, self.labels]
