"""The rounds of connectivity repair: revive half-dead units, move dead entries.

:class:`RepairState` holds the kept entries of a pruned model (an
:class:`~n2nonnx.connectivity.entries.EntryGraph`), which of them may move, their ranking
keys and the counts per weight, and runs the rounds :mod:`n2nonnx.connectivity.repair`
describes; :mod:`~n2nonnx.connectivity.repair_paths` adds the two fallbacks (bridging a
collapsed layer, dropping entries that cut no path).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from n2nonnx.connectivity.entries import EntryGraph, Wiring, cat
from n2nonnx.connectivity.repair_paths import bridge, trim
from n2nonnx.connectivity.repair_record import RepairRecord
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model

log = logging.getLogger(__name__)


class RepairState(EntryGraph):
    """The kept entries of a pruned model and what a repair may change.

    Attributes:
        movable: the masked weights that may change, in layer order.
        keys: weight -> (score, random tie-break), flat: higher regrows first.
        allowed: weight -> bool array of the entries that may be regrown.
        original / target: kept entries per movable weight at the start, and their total.
        removed / added: entries dropped and kept anew, per weight.
    """

    def __init__(
        self,
        model: Model,
        movable: list[str],
        keys: dict[str, tuple[np.ndarray, np.ndarray]],
        allowed: Mapping[str, np.ndarray],
    ) -> None:
        super().__init__(model)
        self.movable = movable
        self.keys = keys
        self.allowed = {w: self._allowed(w, allowed.get(w)) for w in movable}
        self.original = {w: int(self.kept[w].sum()) for w in movable}
        self.target = sum(self.original.values())
        self.removed = dict.fromkeys(movable, 0)
        self.added = dict.fromkeys(movable, 0)

    def _allowed(self, weight: str, given: np.ndarray | None) -> np.ndarray:
        shape = self.kept[weight].shape
        if given is None:
            return np.ones(shape, dtype=np.bool_)
        mask = np.asarray(given).astype(np.bool_)
        if mask.shape != shape:
            raise InvalidArgumentError(
                f"the allowed positions of {weight!r} have shape {mask.shape}, the weight {shape}"
            )
        return mask

    def repair(self, max_rounds: int, seed: int) -> RepairRecord:
        """Revive and move until no kept entry is dead (at most ``max_rounds`` rounds)."""
        forward, backward = self.reach()
        alive_before = forward & backward
        dead = self.dead(forward, backward)
        dead_before = _count(dead)
        rounds = 0
        while _count(dead) and rounds < max_rounds:
            changed = self._round(forward, backward, dead)
            forward, backward = self.reach()
            dead = self.dead(forward, backward)
            if not changed:
                break
            rounds += 1
        alive = forward & backward
        left = _count(dead)
        if left:
            log.warning(
                "repair: %d kept weights still lie on no input-output path: the live part of "
                "the network has no room for them (prune at a lower density, or change the "
                "allocation)",
                left,
            )
        return RepairRecord(
            nonzeros=self.total(),
            dead_weights_before=dead_before,
            dead_weights_after=left,
            dead_units_before=self.dead_units(alive_before),
            dead_units_after=self.dead_units(alive),
            revived_units=sum(
                int((alive[b.start : b.stop] & ~alive_before[b.start : b.stop]).sum())
                for b in self.blocks
            ),
            moved=sum(self.added.values()),
            rounds=rounds,
            converged=left == 0,
            seed=seed,
        )

    def _round(
        self, forward: np.ndarray, backward: np.ndarray, dead: dict[str, np.ndarray]
    ) -> bool:
        """One round: revive (or bridge), then move the dead entries; True if anything changed."""
        added = self.revive(forward, backward, _count(dead))
        if added:
            forward, backward = self.reach()
            dead = self.dead(forward, backward)
        candidates = self._candidates_without(dead)
        room = _count(candidates)
        need = self.target - self.total() + _count(dead)
        if need > room and not added:
            bridged = bridge(self, _count(dead))
            if bridged:  # paid for by the lowest-ranked entries still dead
                dead = self.dead(*self.reach())
                paid = min(bridged, _count(dead))
                self.remove(self.keep_best(dead, _count(dead) - paid))
                if paid < bridged:
                    trim(self, bridged - paid, *self.reach())
                return True
        if need > room:  # no room for all: the best-ranked dead entries stay where they are
            dead = self.keep_best(dead, need - room)
            need = room
        removed = self.remove(dead)
        if need > 0:
            self.regrow(need, candidates)
        elif need < 0:
            log.debug("repair: revival saved %d more weights than the dead paid for", -need)
            trim(self, -need, *self.reach())
        return bool(added or removed)

    def _candidates_without(self, dead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The regrowth candidates once every dead entry is gone (the kept set is restored)."""
        saved = {w: self.kept[w].copy() for w in self.movable}
        for w in self.movable:
            self.kept[w] &= ~dead[w]
        candidates = self.candidates(*self.reach())
        for w in self.movable:
            self.kept[w] = saved[w]
        return candidates

    def total(self) -> int:
        """Kept entries of the movable weights."""
        return sum(int(self.kept[w].sum()) for w in self.movable)

    def dead(self, forward: np.ndarray, backward: np.ndarray) -> dict[str, np.ndarray]:
        """Kept entries of the movable weights on no input-output path."""
        return {w: self.kept[w] & ~self.live(w, forward, backward) for w in self.movable}

    def candidates(self, forward: np.ndarray, backward: np.ndarray) -> dict[str, np.ndarray]:
        """Free, allowed entries from a reachable unit to a unit that reaches an output."""
        return {
            w: ~self.kept[w] & self.allowed[w] & self.live(w, forward, backward)
            for w in self.movable
        }

    def revive(self, forward: np.ndarray, backward: np.ndarray, budget: int) -> int:
        """Give half-dead units that carry dead weights one new weight each; returns the count.

        A unit reachable from the inputs that reaches no output gets an output to a unit
        that reaches one; a unit that reaches an output but has no reachable input gets an
        input from a reachable unit. Units go by the dead weights they save (most first),
        while the dead weights left can pay for the new ones (``budget``: the dead now).
        """
        no_exit, no_entry = forward & ~backward, backward & ~forward
        saves = np.zeros(self.n)
        wirings = [wiring for wiring in self.wirings if wiring.weight in self.allowed]
        for wiring in wirings:
            count = wiring.view(self.kept[wiring.weight]).sum(axis=2)
            fed = wiring.fed(forward)[wiring.in_units]
            into = (count > 0) & fed & no_exit[wiring.targets]
            saves += np.bincount(wiring.targets[into], weights=count[into], minlength=self.n)
            for sources in wiring.mapped:
                s = sources[wiring.in_units]
                out = (count > 0) & ~fed & (s >= 0) & no_entry[np.maximum(s, 0)]
                out &= backward[wiring.targets]
                saves += np.bincount(s[out], weights=count[out], minlength=self.n)
        order = np.lexsort((np.arange(self.n), -saves))
        order = order[saves[order] >= 1]
        chosen = order[np.cumsum(saves[order] + 1) <= budget]
        if chosen.size == 0:
            return 0
        selected = np.zeros(self.n, dtype=np.bool_)
        selected[chosen] = True
        found = [self._revival_entries(wiring, forward, backward, selected) for wiring in wirings]
        unit, skip, score, tie, owner, flat = (cat([f[i] for f in found]) for i in range(6))
        if unit.size == 0:
            return 0
        order = np.lexsort((-tie, -score, skip, unit))
        _, first = np.unique(unit[order], return_index=True)
        picks = sorted(
            set(zip(owner[order][first].tolist(), flat[order][first].tolist(), strict=True))
        )
        for index, position in picks:
            weight = self.movable[index]
            self.kept[weight].reshape(-1)[position] = True
            self.added[weight] += 1
        return len(picks)

    def _revival_entries(
        self, wiring: Wiring, forward: np.ndarray, backward: np.ndarray, selected: np.ndarray
    ) -> list[np.ndarray]:
        """Free entries of ``wiring`` that would revive a selected unit.

        Returns:
            Arrays: unit, is skip, score, tie-break, weight index, flat position.
        """
        weight = wiring.weight
        free = ~wiring.view(self.kept[weight]) & wiring.view(self.allowed[weight])
        fed = wiring.fed(forward)[wiring.in_units]
        no_exit, no_entry = forward & ~backward, backward & ~forward
        groups = [(wiring.targets, fed & no_entry[wiring.targets] & selected[wiring.targets])]
        for sources in wiring.mapped:
            s = sources[wiring.in_units]
            exits = (s >= 0) & no_exit[np.maximum(s, 0)] & selected[np.maximum(s, 0)]
            groups.append((np.maximum(s, 0), exits & backward[wiring.targets]))
        score, tie = self.keys[weight]
        positions = None
        parts: list[list[np.ndarray]] = [[] for _ in range(6)]
        for units, pairs in groups:
            r, c, k = np.nonzero(pairs[..., None] & free)
            if r.size == 0:
                continue
            if positions is None:
                positions = wiring.view(np.arange(score.size).reshape(wiring.shape))
            flat = positions[r, c, k]
            columns = (
                units[r, c],
                np.full(r.size, wiring.is_skip),
                score[flat],
                tie[flat],
                np.full(r.size, self.movable.index(weight)),
                flat,
            )
            for part, column in zip(parts, columns, strict=True):
                part.append(column)
        return [cat(part) for part in parts]

    def regrow(self, need: int, candidates: dict[str, np.ndarray]) -> None:
        """Keep ``need`` candidate entries: the layers that lost weights first, best keys first."""
        capacity = {w: int(candidates[w].sum()) for w in self.movable}
        current = {w: int(self.kept[w].sum()) for w in self.movable}
        for weight, count in _plan(need, capacity, self.original, current).items():
            if count:
                positions = np.flatnonzero(candidates[weight])
                score, tie = self.keys[weight]
                best = positions[np.lexsort((-tie[positions], -score[positions]))[:count]]
                self.kept[weight].reshape(-1)[best] = True
                self.added[weight] += count

    def remove(self, entries: dict[str, np.ndarray]) -> int:
        """Drop the given kept entries; returns how many."""
        total = 0
        for weight, drop in entries.items():
            count = int(drop.sum())
            self.kept[weight] &= ~drop
            self.removed[weight] += count
            total += count
        return total

    def keep_best(self, entries: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        """``entries`` less the ``count`` best-keyed of them."""
        owner, position = self.ranked(entries, descending=True)
        left = {w: entries[w].copy() for w in self.movable}
        for index, flat in zip(owner[:count], position[:count], strict=True):
            left[self.movable[index]].reshape(-1)[flat] = False
        return left

    def ranked(self, entries: dict[str, np.ndarray], descending: bool) -> tuple[np.ndarray, ...]:
        """(weight index, flat position) of the given entries, ordered by key."""
        flats = [np.flatnonzero(entries[w]) for w in self.movable]
        owner = cat([np.full(f.size, i) for i, f in enumerate(flats)])
        position = cat(flats)
        score = cat([self.keys[w][0][f] for w, f in zip(self.movable, flats, strict=True)])
        tie = cat([self.keys[w][1][f] for w, f in zip(self.movable, flats, strict=True)])
        sign = -1.0 if descending else 1.0
        order = np.lexsort((sign * tie, sign * score))
        return owner[order], position[order]


def _plan(
    need: int, capacity: dict[str, int], original: dict[str, int], current: dict[str, int]
) -> dict[str, int]:
    """Entries to regrow per weight.

    Back to the original counts first, then in proportion to them, then wherever there is room.
    """
    names = list(capacity)
    room = np.array([capacity[w] for w in names], dtype=np.int64)
    wants = np.array([max(original[w] - current[w], 0) for w in names], dtype=np.int64)
    plan = _apportion(need, wants.astype(np.float64), np.minimum(room, wants))
    for shares in (np.array([original[w] for w in names], dtype=np.float64), room * 1.0):
        plan += _apportion(need - int(plan.sum()), shares, room - plan)
    return dict(zip(names, plan.tolist(), strict=True))


def _apportion(total: int, shares: np.ndarray, room: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``shares``, each part at most its ``room``."""
    counts = np.zeros(shares.size, dtype=np.int64)
    left = min(total, int(room[shares > 0].sum()))
    while left > 0:
        open_ = np.flatnonzero((shares > 0) & (room - counts > 0))
        quota = left * shares[open_] / shares[open_].sum()
        give = np.minimum(np.floor(quota).astype(np.int64), room[open_] - counts[open_])
        if give.sum() == 0:  # less than one each: the largest quotas get one
            give[np.argsort(-quota, kind="stable")[:left]] = 1
        counts[open_] += give
        left -= int(give.sum())
    return counts


def _count(entries: dict[str, np.ndarray]) -> int:
    return sum(int(np.count_nonzero(a)) for a in entries.values())
