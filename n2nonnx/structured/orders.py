"""The registry of structured methods: each ranks a model's removable units, added by decorator.

A method turns the model's coupled components (:mod:`.coupling`) into a removal order, the
cheapest first; :func:`~n2nonnx.structured.prune_structured` then walks the order, within
the method's per-layer limits, until the prune level is met (:mod:`.selection`). SNACS
(:mod:`.snacs`) also returns its limits and protected-unit counts; the baselines
(:mod:`.baselines`) only an order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.registry import name_registry

if TYPE_CHECKING:
    from n2nonnx.model import Model
    from n2nonnx.structured.options import StructuredOptions
    from n2nonnx.units.coupling import Component


@dataclass(frozen=True)
class RankingContext:
    """Everything a method may use.

    Attributes:
        model: the trained model.
        components: its coupled unit groups (:func:`~n2nonnx.units.coupling.find_components`).
        dataset: the resolved data set, or None (only methods with ``needs_data`` get one).
        options: the validated options.
        progress: log each step at INFO level.
    """

    model: Model
    components: Sequence[Component]
    dataset: Any
    options: StructuredOptions
    progress: bool = False


@dataclass
class Ranking:
    """A method's answer: the removal order, and SNACS's limits and protected units.

    Attributes:
        order: the removable components, the first removed first.
        limits: layer name -> the largest fraction of its units that may go (empty: none).
        protected: layer name -> units never removed (sensitivity protection).
    """

    order: list[Component]
    limits: dict[str, float] = field(default_factory=dict)
    protected: dict[str, int] = field(default_factory=dict)


RankFunction = Callable[[RankingContext], Ranking]


@dataclass(frozen=True)
class StructuredMethod:
    """A registered method: its ranking function and what it needs."""

    name: str
    rank: RankFunction
    needs_data: bool
    needs_trained: bool
    summary: str


METHODS: dict[str, StructuredMethod] = {}
_add = name_registry(METHODS, "structured method")


def structured_method(
    name: str, *, needs_data: bool, needs_trained: bool = True, summary: str
) -> Callable[[RankFunction], RankFunction]:
    """Register a ranking function under ``name`` (a name registered twice is refused).

    Args:
        name: the method name users give (``method=NAME``).
        needs_data: whether the method ranks on activations of data.
        needs_trained: whether its ranking means anything on an untrained model (a warning
            is given for one that looks untrained).
        summary: one line for listings.

    Returns:
        A decorator that records the function and returns it unchanged.
    """

    def register(function: RankFunction) -> RankFunction:
        _add(name)(StructuredMethod(name, function, needs_data, needs_trained, summary))
        return function

    return register


def get_method(name: str) -> StructuredMethod:
    """The method called ``name``.

    Raises:
        InvalidArgumentError: an unknown name, with the known ones.
    """
    if name not in METHODS:
        raise InvalidArgumentError(
            f"unknown structured pruning method {name!r}; choose from {', '.join(METHODS)}"
        )
    return METHODS[name]
