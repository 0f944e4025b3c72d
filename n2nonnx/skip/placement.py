"""Connectivity-guided N2NSkip placement: spend the skip budget where the unit graph is broken.

``placement="random"`` (the paper) samples every pair's connections at random
(:mod:`~n2nonnx.skip.sampling`). ``placement="connectivity"`` first reads the unit graph
of the pruned sequential network (:func:`n2nonnx.connectivity.build_unit_graph`) and
places connections that repair it, one unit pair each, in this order:

1. **input paths**: target units of later layers that no directed path from the inputs
   reaches get one skip input from a source unit that has one (targets in layer order,
   so a repaired unit passes its path on; the nearest source layer first, the source
   units with the fewest skip connections first);
2. **output paths**: source units with an input path but none to an output get one skip
   output to a target unit that has one (sources in reverse layer order);
3. **components**: every connected component still cut off from the inputs (heat at
   saturation ``|inputs in C| / |C| = 0`` where the dense graph has it positive) gets
   one connection into the inputs' component.

A repair costs one position (a whole kernel with ``sampling="channel"``) and repairs stop
when the skip budget is spent. The rest of the budget is split over the pairs as random
placement splits it (by the pairs' dense sizes, or equally) and laid out by ``sampling``
around the repairs (:func:`~n2nonnx.skip.sampling.fill_positions`), except that the pairs
out of a graph input together get only as many positions as the inputs lack edges to
their dense count (the pruning's cuts minus the repairs' additions) while the other pairs
have room. The total number of non-zeros is exactly random placement's.

Why the inputs are special: they are the heat sources of the connectivity measure, and
delta(t) at finite t is dominated by how fast heat leaves them, i.e. by their degree.
Random placement spends a pair's share out of the inputs whatever their degree (VGG-1D,
expander pruning at 5%: heat-source degree 54 against the dense 32, delta(0.024) 0.196;
connectivity placement: degree 32, delta 0.016; random pruning alone 0.024; a CIFAR
VGG19 at 2% with global random pruning: degree 295 / 191 against 192, delta(0.0041)
0.202 / 0.103; ``examples/skip_placement.py``). Steering the rest by each unit's heat
deficit at one finite time was tried too and changed delta(t) by under 1%.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from n2nonnx.connectivity import build_unit_graph
from n2nonnx.connectivity.unit_graph import UnitGraph, live_nodes, reachable
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.skip.budget import apportion
from n2nonnx.skip.candidates import Pair
from n2nonnx.skip.sampling import Connections, connections_from_mask, fill_positions

log = logging.getLogger(__name__)


@dataclass
class Repairs:
    """What connectivity placement repaired (recorded in the model's metadata).

    Attributes:
        input_paths: target units given an input path.
        output_paths: source units given an output path.
        components: cut-off components joined to the inputs' component.
        nonzeros: skip positions the repairs took.
        dead_before: dead units of the pruned sequential graph (no input or no output path).
        dead_after: dead units once the repairs are in (the rest of the budget may lower it).
        skipped: repairs left out because the budget ran out.
        input_allowance: unit-graph edges the rest of the budget could add out of the
            graph inputs (their edges still missing to the dense count).
    """

    input_paths: int = 0
    output_paths: int = 0
    components: int = 0
    nonzeros: int = 0
    dead_before: int = 0
    dead_after: int = 0
    skipped: int = 0
    input_allowance: int = 0

    def to_dict(self) -> dict:
        """JSON-ready counts."""
        return dict(self.__dict__)


@dataclass
class _State:
    """The unit graph being repaired: the sequential edges plus the skip connections so far."""

    graph: UnitGraph
    nodes: list[tuple[np.ndarray, np.ndarray]]  # per pair: (source nodes, target nodes)
    kernels: list[int]  # per pair: positions one repair takes
    budget: int
    spent: int = 0
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    skipped: int = 0
    fixes: list[list[tuple[int, int]]] = field(init=False)  # per pair: (target, source)
    out_degree: np.ndarray = field(init=False)  # skip connections per node, out and in
    in_degree: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.fixes = [[] for _ in self.nodes]
        self.out_degree = np.zeros(self.graph.n_nodes, np.int64)
        self.in_degree = np.zeros(self.graph.n_nodes, np.int64)

    def affordable(self, position: int, wanted: int) -> int:
        """How many of ``wanted`` repairs of pair ``position`` the budget still allows."""
        return max(0, min(wanted, (self.budget - self.spent) // self.kernels[position]))

    def flow(self) -> sp.csr_array:
        """The directed unit graph with the skip connections placed so far."""
        n = self.graph.n_nodes
        extra = sp.csr_array(
            (np.ones(len(self.rows)), (np.asarray(self.rows, int), np.asarray(self.cols, int))),
            shape=(n, n),
        )
        return sp.csr_array(self.graph.flow + extra)

    def connect(self, position: int, target: int, source: int) -> None:
        """Place the skip connection ``source -> target`` (unit indices) of pair ``position``."""
        sources, targets = self.nodes[position]
        self.rows.append(int(sources[source]))
        self.cols.append(int(targets[target]))
        self.fixes[position].append((target, source))
        self.out_degree[sources[source]] += 1
        self.in_degree[targets[target]] += 1
        self.spent += self.kernels[position]


def place_connections(
    sequential: Model,
    pairs: Sequence[Pair],
    shares: Sequence[float],
    skip_budget: int,
    sampling: str,
    rng: np.random.Generator,
) -> tuple[list[Connections | None], Repairs]:
    """Connectivity-guided connections of every pair, ``skip_budget`` positions in all.

    Args:
        sequential: the model with its final sequential masks (no skip layers yet).
        pairs: the candidate pairs (from :func:`~n2nonnx.skip.candidates.find_pairs`).
        shares: each pair's share of the budget left after the repairs.
        skip_budget: the skip positions to place (at most the pairs' dense sizes together).
        sampling: the layout of the rest of the budget (see :mod:`~n2nonnx.skip.sampling`).
        rng: the random generator.

    Returns:
        ``(connections, repairs)``: per pair its connections (None for a pair that got
        none) and what the repairs did.

    Raises:
        InvalidArgumentError: a pair whose units the unit graph does not have.
    """
    graph = build_unit_graph(sequential)
    kernels = [_kernel(p) if sampling == "channel" else 1 for p in pairs]
    state = _State(graph, _pair_nodes(graph, pairs), kernels, skip_budget)
    repairs = Repairs(dead_before=_dead(graph, graph.flow))
    repairs.input_paths = _repair_input_paths(state, pairs, rng)
    repairs.output_paths = _repair_output_paths(state, pairs, rng)
    repairs.components = _join_components(state, pairs, rng)
    repairs.skipped = state.skipped
    repairs.dead_after = _dead(graph, state.flow())
    masks, used = _repair_masks(pairs, state.fixes, sampling, rng)
    repairs.nonzeros = sum(used)
    allowance = _input_allowance(state, sequential)
    rest = _split_rest(
        skip_budget - repairs.nonzeros,
        shares,
        [p.dense_size - u for p, u in zip(pairs, used, strict=True)],
        [
            k if p.source.name.startswith("input:") else None
            for p, k in zip(pairs, kernels, strict=True)
        ],
        allowance,
    )
    repairs.input_allowance = allowance
    connections: list[Connections | None] = []
    for pair, mask, count in zip(pairs, masks, rest, strict=True):
        full = fill_positions(mask, count, sampling, rng)
        connections.append(
            connections_from_mask(full.reshape(mask.shape[0], mask.shape[1], *pair.kernel))
            if full.any()
            else None
        )
    log.info(
        "connectivity placement: %d input paths, %d output paths, %d components repaired with "
        "%d skip weights; dead units %d -> %d",
        repairs.input_paths,
        repairs.output_paths,
        repairs.components,
        repairs.nonzeros,
        repairs.dead_before,
        repairs.dead_after,
    )
    return connections, repairs


def _split_rest(
    total: int,
    shares: Sequence[float],
    caps: list[int],
    edge_costs: list[int | None],
    allowance: int,
) -> list[int]:
    """Split the budget left after the repairs; the pairs out of the graph inputs get ``allowance``.

    The pairs' shares decide as in random placement, except that the pairs whose source
    is a graph input (``edge_costs[i]``: positions one unit-graph edge takes, None for the
    other pairs) together get at most ``allowance`` edges while the other pairs have room
    (the exact total always wins).
    """
    inward = [i for i, cost in enumerate(edge_costs) if cost is not None]
    others = [i for i, cost in enumerate(edge_costs) if cost is None]
    costs = [int(edge_costs[i] or 1) for i in inward]
    edges = apportion(
        allowance,
        [shares[i] for i in inward],
        [caps[i] // c for i, c in zip(inward, costs, strict=True)],
    )
    wanted = [e * c for e, c in zip(edges, costs, strict=True)]
    limited = apportion(min(total, sum(wanted)), wanted, wanted)
    spread = apportion(total - sum(limited), [shares[i] for i in others], [caps[i] for i in others])
    rest = [0] * len(shares)
    for i, count in zip(inward + others, limited + spread, strict=True):
        rest[i] = count
    short = total - sum(rest)  # the other pairs are full: the input pairs take the rest
    if short > 0:
        room = [c - r for c, r in zip(caps, rest, strict=True)]
        for i, count in enumerate(apportion(short, list(shares), room)):
            rest[i] += count
    return rest


def _input_allowance(state: _State, sequential: Model) -> int:
    """Edges out of the graph inputs still missing to the dense network's count.

    The dense count is, per layer a graph input feeds, every unit of the layer
    (``units / groups`` for a grouped conv) per input unit it reads; the current count is
    the pruned graph's plus the repairs'.
    """
    graph = state.graph
    dense = 0
    sizes = {block.name: block.size for block in graph.blocks if block.is_input}
    for layer in sequential.layers:
        for edge in layer.fed_by:
            if edge.source not in sizes:
                continue
            if edge.unit_map is None:
                dense += sizes[edge.source] * layer.units
            else:
                mapped = np.asarray(edge.unit_map)
                read = int(np.unique(mapped[mapped >= 0]).size)
                dense += read * (layer.units // max(int(layer.groups), 1))
    inputs = graph.input_nodes
    current = int(graph.flow[inputs].nnz) if inputs.size else 0
    current += int(np.isin(np.asarray(state.rows, np.int64), inputs).sum())
    return max(0, dense - current)


def _kernel(pair: Pair) -> int:
    return int(np.prod(pair.kernel, dtype=np.int64))


def _pair_nodes(graph: UnitGraph, pairs: Sequence[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unit-graph node indices of every pair's source and target units."""
    blocks = {block.name: block for block in graph.blocks}
    found = []
    for pair in pairs:
        ends = []
        ends_wanted = ((pair.source.name, pair.source.units), (pair.target.name, pair.target.units))
        for name, units in ends_wanted:
            block = blocks.get(name)
            if block is None or block.size != units:
                raise InvalidArgumentError(
                    f"connectivity placement: the unit graph has no {units} units for {name!r} "
                    "(its layout is not traced unit by unit); use placement='random'"
                )
            ends.append(np.arange(block.start, block.stop))
        found.append((ends[0], ends[1]))
    return found


def _alive(graph: UnitGraph, flow: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """(has an input path, has an output path) per node."""
    return live_nodes(flow, graph.input_nodes, graph.output_nodes)


def _dead(graph: UnitGraph, flow: sp.csr_array) -> int:
    """Units (inputs excluded) without an input path or without an output path."""
    forward, backward = _alive(graph, flow)
    is_input = np.zeros(graph.n_nodes, dtype=bool)
    is_input[graph.input_nodes] = True
    return int(np.count_nonzero(~(forward & backward) & ~is_input))


def _by_degree(candidates: np.ndarray, degree: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``candidates`` (unit indices) ordered by ``degree``, ties in random order."""
    shuffled = rng.permutation(candidates)
    return shuffled[np.argsort(degree[shuffled], kind="stable")]


def _repair_input_paths(state: _State, pairs: Sequence[Pair], rng: np.random.Generator) -> int:
    """Give target units without an input path one skip input each (targets in layer order)."""
    repaired = 0
    for target in sorted({p.target.index for p in pairs}):
        mine = sorted(
            (i for i, p in enumerate(pairs) if p.target.index == target),
            key=lambda i: (pairs[i].k, pairs[i].source.depth),  # nearest source first
        )
        forward = reachable(state.flow(), state.graph.input_nodes)
        dead = np.flatnonzero(~forward[state.nodes[mine[0]][1]])
        repaired += _connect(state, mine, dead, forward, rng, dead_are_targets=True)
    return repaired


def _repair_output_paths(state: _State, pairs: Sequence[Pair], rng: np.random.Generator) -> int:
    """Give source units with an input path but no output path one skip output each."""
    repaired = 0
    for _, name in sorted({(p.source.depth, p.source.name) for p in pairs}, reverse=True):
        mine = sorted(
            (i for i, p in enumerate(pairs) if p.source.name == name),
            key=lambda i: (pairs[i].k, pairs[i].target.index),  # nearest target first
        )
        forward, backward = _alive(state.graph, state.flow())
        sources = state.nodes[mine[0]][0]
        dead = np.flatnonzero(forward[sources] & ~backward[sources])
        repaired += _connect(state, mine, dead, backward, rng, dead_are_targets=False)
    return repaired


def _connect(
    state: _State,
    positions: list[int],
    dead: np.ndarray,
    alive: np.ndarray,
    rng: np.random.Generator,
    *,
    dead_are_targets: bool,
) -> int:
    """One skip connection per unit of ``dead`` to a partner unit that is ``alive``.

    The first pair of ``positions`` with an alive partner takes them all; partners are
    used in turn, those with the fewest skip connections first.

    Args:
        state: the repair state.
        positions: pairs sharing the dead units' layer, in order of preference.
        dead: unit indices (in that layer) to repair.
        alive: per node, whether it can be a partner.
        rng: the random generator.
        dead_are_targets: ``dead`` are target units (partners: sources), else sources.

    Returns:
        The repairs made.
    """
    dead = rng.permutation(dead)
    for position in positions:
        if dead.size == 0:
            return 0
        sources, targets = state.nodes[position]
        partners = sources if dead_are_targets else targets
        candidates = np.flatnonzero(alive[partners])
        if candidates.size == 0:
            continue
        take = state.affordable(position, dead.size)
        state.skipped += dead.size - take
        degree = (state.out_degree if dead_are_targets else state.in_degree)[partners]
        order = _by_degree(candidates, degree, rng)
        for j, unit in enumerate(dead[:take]):
            partner = int(order[j % order.size])
            if dead_are_targets:
                state.connect(position, int(unit), partner)
            else:
                state.connect(position, partner, int(unit))
        return take
    return 0


def _join_components(state: _State, pairs: Sequence[Pair], rng: np.random.Generator) -> int:
    """Join every component cut off from the inputs to the inputs' component (one edge each)."""
    flow = state.flow()
    _, labels = csgraph.connected_components(flow, directed=False)
    heated = np.zeros(labels.max() + 1 if labels.size else 0, dtype=bool)
    heated[labels[state.graph.input_nodes]] = True
    joined = 0  # ``heated`` below also marks components given up for lack of budget
    for position in rng.permutation(len(pairs)):
        sources, targets = state.nodes[position]
        cold_sources = sources[~heated[labels[sources]]]
        warm_targets = np.flatnonzero(heated[labels[targets]])
        cold_targets = targets[~heated[labels[targets]]]
        warm_sources = np.flatnonzero(heated[labels[sources]])
        for cold, warm, outward in (
            (cold_sources, warm_targets, True),
            (cold_targets, warm_sources, False),
        ):
            if warm.size == 0:
                continue
            for node in cold:
                component = labels[node]
                if heated[component]:
                    continue
                if not state.affordable(int(position), 1):
                    state.skipped += 1
                    heated[component] = True  # counted once; it stays cut off
                    continue
                partner = int(rng.choice(warm))
                unit = int(node - (sources if outward else targets)[0])
                if outward:
                    state.connect(int(position), partner, unit)
                else:
                    state.connect(int(position), unit, partner)
                heated[component] = True
                joined += 1
    return joined


def _repair_masks(
    pairs: Sequence[Pair],
    fixes: list[list[tuple[int, int]]],
    sampling: str,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[int]]:
    """Per pair the bool ``(targets, sources, kernel positions)`` mask of its repairs.

    A repair takes one random kernel position, or the whole kernel with ``channel``.
    """
    masks, used = [], []
    for pair, mine in zip(pairs, fixes, strict=True):
        kernel = _kernel(pair)
        mask = np.zeros((pair.target.units, pair.source.units, kernel), dtype=bool)
        if mine:
            target, source = (np.asarray(column, np.int64) for column in zip(*mine, strict=True))
            if sampling == "channel":
                mask[target, source, :] = True
            else:
                mask[target, source, rng.integers(0, kernel, size=len(mine))] = True
        masks.append(mask)
        used.append(int(np.count_nonzero(mask)))
    return masks, used
