"""The cut: components in removal order, per-layer caps, and the prefix that meets a parameter target.

Every method ranks the removable components (lowest first). Walking that ranking, a
component is *admissible* while no layer it touches exceeds its cap (its upper limit; a
layer always keeps a unit). The removed set is the shortest admissible prefix whose
removal, done by :func:`~n2nonnx.units.remove_units`, leaves at most the target
number of parameters -- counted exactly on the reduced model, by bisection over the
prefix length (parameters fall monotonically along it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.units.coupling import Component


def admissible(order: Sequence[Component], caps: Mapping[str, int]) -> list[Component]:
    """The components of ``order`` that fit the caps, taken greedily in order."""
    used: dict[str, int] = defaultdict(int)
    taken = []
    for component in order:
        if component.fixed:
            continue
        if all(
            used[name] + component.count(name) <= caps.get(name, 0) for name in component.layers
        ):
            for name in component.layers:
                used[name] += component.count(name)
            taken.append(component)
    return taken


def removal_request(components: Sequence[Component]) -> dict[str, list[int]]:
    """Layer name -> sorted unit indices, the argument of ``remove_units``."""
    request: dict[str, list[int]] = defaultdict(list)
    for component in components:
        for name, unit in component.units:
            request[name].append(unit)
    return {name: sorted(units) for name, units in request.items()}


def cut_to_target(
    model: Model, sequence: Sequence[Component], target_params: int, method: str
) -> tuple[list[Component], Model]:
    """The shortest prefix of ``sequence`` whose removal leaves ``<= target_params`` parameters.

    Raises:
        InvalidArgumentError: even the whole sequence leaves more (the message says how
            far the method can go).
    """
    from n2nonnx.units import remove_units

    cache: dict[int, Model] = {}

    def reduced(k: int) -> Model:
        if k not in cache:
            cache[k] = remove_units(model, removal_request(sequence[:k])) if k else model
        return cache[k]

    total = model.parameter_count
    if reduced(len(sequence)).parameter_count > target_params:
        reachable = 100.0 * (1 - reduced(len(sequence)).parameter_count / total)
        wanted = 100.0 * (1 - target_params / total)
        raise InvalidArgumentError(
            f"{method} cannot remove {wanted:.1f}% of the parameters: its per-layer limits (upper "
            f"limits, protected units, at least one unit kept per layer) allow at most {reachable:.1f}%; "
            "lower --prune-percent (or raise --target-params), or relax --upper-limit / --protect"
        )
    low, high = 0, len(sequence)
    while low < high:
        middle = (low + high) // 2
        if reduced(middle).parameter_count <= target_params:
            high = middle
        else:
            low = middle + 1
    return list(sequence[:low]), reduced(low)
