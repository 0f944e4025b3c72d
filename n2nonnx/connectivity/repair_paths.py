"""The two fallbacks of connectivity repair, both about paths.

:func:`bridge` reconnects a part of the network that no single new weight can (a layer
pruned to nothing): the cheapest chain of new entries from a reachable unit, through a
unit that carries dead weights, to a unit that reaches an output. :func:`trim` drops
kept entries whose removal cuts no path, for when revival saved more weights than the
dead ones could pay for.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from n2nonnx.connectivity.entries import Wiring, cat


class RepairState(Protocol):
    """What the path fallbacks use of a repair (:class:`~.repair_steps.RepairState`)."""

    n: int
    flow: sp.csr_array
    kept: dict[str, np.ndarray]
    wirings: list[Wiring]
    movable: list[str]
    keys: dict[str, tuple[np.ndarray, np.ndarray]]
    allowed: dict[str, np.ndarray]
    original: dict[str, int]
    removed: dict[str, int]
    added: dict[str, int]

    def reach(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes reachable from the inputs, and nodes that reach an output."""

    def ranked(self, entries: dict[str, np.ndarray], descending: bool) -> tuple[np.ndarray, ...]:
        """Entries in the order to take them."""


def bridge(state: RepairState, budget: int) -> int:
    """Reconnect a unit that carries dead weights by the fewest new entries; returns them.

    The cheapest path (new entries cost 1, kept ones almost nothing) from a reachable
    unit through the dead unit to a unit that reaches an output: what a collapsed layer
    (no kept weight at all) needs before anything can revive through it.
    """
    from scipy.sparse import csgraph

    forward, backward = state.reach()
    hops, graph = _structure(state)
    alive = forward & backward
    flow = state.flow.tocoo()
    carrying = np.zeros(state.n, dtype=np.bool_)
    carrying[flow.row] = carrying[flow.col] = True
    carrying &= ~alive
    if not (carrying.any() and forward.any() and backward.any()):
        return 0
    d_from, from_, _ = csgraph.dijkstra(
        graph, indices=np.flatnonzero(forward), min_only=True, return_predecessors=True
    )
    d_to, to, _ = csgraph.dijkstra(
        sp.csr_array(graph.T),
        indices=np.flatnonzero(backward),
        min_only=True,
        return_predecessors=True,
    )
    cost = np.where(carrying, d_from + d_to, np.inf)
    via = int(np.argmin(cost))
    if not np.isfinite(cost[via]):
        return 0
    path = []
    node = via
    while from_[node] >= 0:
        path.append((int(from_[node]), node))
        node = int(from_[node])
    node = via
    while to[node] >= 0:
        path.append((node, int(to[node])))
        node = int(to[node])
    new = [(s, t) for s, t in path if state.flow[s, t] == 0]
    if not new or len(new) > budget:
        return 0
    for s, t in new:
        _grow_hop(state, hops, s, t)
    return len(new)


def _structure(state: RepairState) -> tuple[tuple[np.ndarray, ...], sp.csr_array]:
    """Unit pairs that free entries could join, and the path costs of every unit edge.

    Returns:
        ``(source, target, wiring index, row, col)`` of the free pairs, and a CSR matrix
        of costs: 1 for a pair with only free entries, 1e-6 for a kept edge.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(5)]
    for index, wiring in enumerate(state.wirings):
        if wiring.weight not in state.allowed:
            continue
        free = ~wiring.view(state.kept[wiring.weight]) & wiring.view(state.allowed[wiring.weight])
        r, c = np.nonzero(free.any(axis=2))
        for sources in wiring.mapped:
            s = sources[wiring.in_units[r, c]]
            ok = s >= 0
            columns = (s[ok], wiring.targets[r, c][ok], np.full(ok.sum(), index), r[ok], c[ok])
            for part, column in zip(parts, columns, strict=True):
                part.append(column)
    hops = tuple(cat(part) for part in parts)
    flow = state.flow.tocoo()
    s = np.concatenate([flow.row, hops[0]])
    t = np.concatenate([flow.col, hops[1]])
    cost = np.concatenate([np.full(flow.row.size, 1e-6), np.ones(hops[0].size)])
    order = np.lexsort((cost, t, s))
    s, t, cost = s[order], t[order], cost[order]
    first = np.ones(s.size, dtype=np.bool_)
    first[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    graph = sp.csr_array((cost[first], (s[first], t[first])), shape=(state.n, state.n))
    return hops, graph


def _grow_hop(state: RepairState, hops: tuple[np.ndarray, ...], source: int, target: int) -> None:
    """Keep the best-keyed free entry joining unit ``source`` to unit ``target``."""
    best: tuple[float, float, str, int] | None = None
    for i in np.flatnonzero((hops[0] == source) & (hops[1] == target)):
        wiring = state.wirings[int(hops[2][i])]
        weight, r, c = wiring.weight, int(hops[3][i]), int(hops[4][i])
        positions = wiring.view(np.arange(state.kept[weight].size).reshape(wiring.shape))[r, c]
        free = (
            ~state.kept[weight].reshape(-1)[positions]
            & state.allowed[weight].reshape(-1)[positions]
        )
        score, tie = state.keys[weight]
        for flat in positions[free]:
            key = (float(score[flat]), float(tie[flat]), weight, int(flat))
            if best is None or key[:2] > best[:2]:
                best = key
    if best is not None:
        state.kept[best[2]].reshape(-1)[best[3]] = True
        state.added[best[2]] += 1


def trim(state: RepairState, excess: int, forward: np.ndarray, backward: np.ndarray) -> None:
    """Drop ``excess`` kept entries: those whose removal cuts no path first.

    Lowest keys first, from layers above their original count first; an entry qualifies
    when every unit it touches keeps a live input and a live output (or its unit pair
    keeps another kernel entry). When none qualifies, the lowest-keyed go.
    """
    flow = state.flow.tocoo()
    live = forward[flow.row] & backward[flow.col]
    degrees = (
        np.bincount(flow.row[live], minlength=state.n),
        np.bincount(flow.col[live], minlength=state.n),
    )
    contributions = {
        (int(s), int(t)): int(v) for s, t, v in zip(flow.row, flow.col, flow.data, strict=True)
    }
    first = {
        w: state.kept[w]
        if int(state.kept[w].sum()) > state.original[w]
        else np.zeros_like(state.kept[w])
        for w in state.movable
    }
    rest = {w: state.kept[w] & ~first[w] for w in state.movable}
    ranked = [state.ranked(first, descending=False), state.ranked(rest, descending=False)]
    dropped = 0
    for safe_only in (True, False):
        for owner, position in ranked:
            for index, flat in zip(owner.tolist(), position.tolist(), strict=True):
                if dropped == excess:
                    return
                weight = state.movable[index]
                if not state.kept[weight].reshape(-1)[flat]:
                    continue
                found = _pair_edges(state, weight, flat)
                edges = found or []
                lost = {e for e in edges if contributions.get(e, 1) - edges.count(e) <= 0}
                if safe_only and (found is None or not _keeps_paths(lost, *degrees)):
                    continue
                state.kept[weight].reshape(-1)[flat] = False
                state.removed[weight] += 1
                dropped += 1
                for edge in edges:
                    contributions[edge] = contributions.get(edge, 1) - 1
                for s, t in lost:
                    degrees[0][s] -= 1
                    degrees[1][t] -= 1


def _pair_edges(state: RepairState, weight: str, flat: int) -> list[tuple[int, int]] | None:
    """The unit edges this entry is the last kept entry of its unit pair for.

    Returns:
        The edges (with repeats), or None where an unmapped edge makes them unknown.
    """
    index = np.unravel_index(flat, state.kept[weight].shape)
    edges: list[tuple[int, int]] = []
    for wiring in state.wirings:
        if wiring.weight != weight:
            continue
        r, c = index[wiring.axes[0]], index[wiring.axes[1]]
        if np.moveaxis(state.kept[weight], wiring.axes, (0, 1))[r, c].sum() > 1:
            continue
        if wiring.unmapped:
            return None
        t = int(wiring.targets[r, c])
        for sources in wiring.mapped:
            s = int(sources[wiring.in_units[r, c]])
            if s >= 0:
                edges.append((s, t))
    return edges


def _keeps_paths(lost: set[tuple[int, int]], out_degree: np.ndarray, in_degree: np.ndarray) -> bool:
    """Whether every source of the ``lost`` edges keeps a live output, every target a live input."""
    sources = Counter(s for s, _ in lost)
    targets = Counter(t for _, t in lost)
    return all(out_degree[s] > k for s, k in sources.items()) and all(
        in_degree[t] > k for t, k in targets.items()
    )
