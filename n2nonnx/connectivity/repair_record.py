"""What a connectivity repair did: the record stored as a ``repair`` stage in the provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RepairRecord:
    """What a repair did (JSON-ready through :meth:`to_dict`; stored as a ``repair`` stage).

    Attributes:
        nonzeros: kept masked weights, before and after (the count never changes).
        dead_weights_before / dead_weights_after: kept weights on no input-output path.
        dead_units_before / dead_units_after: units on no input-output path, per layer
            (every layer listed, as :meth:`UnitGraph.dead_units` counts them).
        revived_units: units dead before and live after.
        moved: weights placed at new positions (revival and regrowth).
        rounds: rounds that changed the masks.
        converged: no kept weight is dead at the end.
        seed: the seed of the random choices.
        layers: per masked weight: ``layer``, ``weight``, ``before`` and ``kept`` (after)
            counts, ``removed``, ``added``, ``by`` (``scores`` or ``random``).
    """

    nonzeros: int
    dead_weights_before: int
    dead_weights_after: int
    dead_units_before: dict[str, int]
    dead_units_after: dict[str, int]
    revived_units: int
    moved: int
    rounds: int
    converged: bool
    seed: int
    layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data, with the dead-unit totals added."""
        return {
            **asdict(self),
            "dead_units_total": {
                "before": sum(self.dead_units_before.values()),
                "after": sum(self.dead_units_after.values()),
            },
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RepairRecord:
        """A record read back from the provenance (extra keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def summary(self) -> str:
        """One line for the command line."""
        line = (
            f"repair: moved {self.moved:,} of {self.nonzeros:,} weights in {self.rounds} round(s); "
            f"dead weights {self.dead_weights_before:,} -> {self.dead_weights_after:,}, dead units "
            f"{sum(self.dead_units_before.values())} -> {sum(self.dead_units_after.values())}"
        )
        if not self.converged:
            line += " (not converged: the live part of the network has no room for the rest)"
        return line
