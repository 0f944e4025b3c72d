"""Name-keyed registries filled by decorators (optimizers, schedules, zoo models ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

Item = TypeVar("Item")


def name_registry(table: dict[str, Any], kind: str) -> Callable[[str], Callable[[Item], Item]]:
    """A decorator factory adding items to ``table`` by name; a name registered twice is refused.

    Args:
        table: the registry to fill.
        kind: what the items are, for the error message ("optimizer", "zoo model" ...).

    Returns:
        ``register(name)``, a decorator that stores the decorated item under ``name``.
    """

    def register(name: str) -> Callable[[Item], Item]:
        def add(item: Item) -> Item:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = item
            return item

        return add

    return register
