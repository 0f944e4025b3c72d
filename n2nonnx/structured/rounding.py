"""Aligned widths: every layer's kept unit count a multiple of ``align``, the parameter target met.

onnxruntime's fast convolution kernels (NCHWc) block input channels by 16 (AVX-512; 8 on
AVX2): a layer slimmed to 45 or 90 channels sends its consumer to a generic kernel with
layout reorders around it, and the smaller model can run slower than the dense one. So the
cut (:mod:`.selection`) is rounded, layer by layer, in units of coupled components:

1. **down**: a misaligned layer loses the next components of the ranking that touch it
   until its kept count is the multiple below (never below ``align`` itself);
2. **up**, where down cannot be reached (the ranking or the caps hold no more of it, or
   it would leave fewer than ``align`` units): the last-ranked removed components of the
   layer come back until the count is the multiple above (or the full width);
3. until every layer is aligned (coupled layers share components, so one rounding can
   misalign another; the walk repeats, and stops where nothing changes);
4. where the result keeps more parameters than the target, the cut starts again from a
   longer prefix of the ranking; where it removed more than it had to, layers are rounded
   back up one at a time (in ranking order of their first removed component) while the
   target still holds. Parameters are counted exactly, on the model the removal gives.

A layer narrower than ``align`` keeps whatever the cut gives it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence

from n2nonnx.model import Model
from n2nonnx.units.coupling import Component


def _removed(selected: Sequence[bool], sequence: Sequence[Component]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for chosen, component in zip(selected, sequence, strict=True):
        if chosen:
            for name, _ in component.units:
                counts[name] += 1
    return counts


def _aligned(units: int, kept: int, align: int) -> bool:
    return units < align or kept == units or kept % align == 0


def _round_layer(
    name: str, units: int, selected: list[bool], sequence: Sequence[Component], align: int
) -> bool:
    """Round one layer (down if it can, else up) in place; returns whether it changed."""
    kept = units - _removed(selected, sequence)[name]
    if _aligned(units, kept, align):
        return False
    down = (kept // align) * align
    if down >= align:
        trial = list(selected)
        count = kept
        for position, component in enumerate(sequence):
            if trial[position] or name not in component.layers:
                continue
            if count - component.count(name) < down:
                continue
            trial[position] = True
            count -= component.count(name)
            if count == down:
                selected[:] = trial
                return True
    up = min(units, -(-kept // align) * align)
    count = kept
    for position in range(len(sequence) - 1, -1, -1):
        component = sequence[position]
        if not selected[position] or name not in component.layers:
            continue
        if count + component.count(name) > up:
            continue
        selected[position] = False
        count += component.count(name)
        if count == up:
            return True
    return count != kept


def align_cut(
    model: Model,
    sequence: Sequence[Component],
    prefix: int,
    align: int,
    params_of: Callable[[list[Component]], int],
    target_params: int,
) -> list[Component]:
    """The components to remove: the cut's first ``prefix`` of ``sequence``, rounded.

    Args:
        model: the model being slimmed.
        sequence: the admissible ranking (any subset of it respects the per-layer caps).
        prefix: how many of its first components the exact cut removes.
        align: the multiple of kept units (0 or 1: the cut as it is).
        params_of: the exact parameter count after removing some components.
        target_params: at most this many parameters are kept.

    Returns:
        The components to remove, in ranking order.
    """
    if align <= 1:
        return list(sequence[:prefix])
    widths = {layer.name: layer.units for layer in model.layers}
    best: list[bool] | None = None
    for start in _longer_prefixes(prefix, len(sequence)):
        selected = [position < start for position in range(len(sequence))]
        for _ in range(4 * len(widths) + 4):  # each pass aligns or changes a layer
            changed = False
            for name, units in widths.items():
                changed |= _round_layer(name, units, selected, sequence, align)
            if not changed:
                break
        if params_of(_chosen(selected, sequence)) <= target_params:
            best = selected
            break
    if best is None:  # no aligned cut meets the target: the exact one does
        warnings.warn(
            f"align {align}: no cut with kept unit counts in multiples of {align} meets the "
            "parameter target on this model (its layers are too narrow); the exact cut is "
            "kept: pass a smaller align (8) or align=0",
            stacklevel=3,
        )
        return list(sequence[:prefix])
    _round_back_up(best, sequence, widths, align, params_of, target_params)
    return _chosen(best, sequence)


def _round_back_up(selected, sequence, widths, align, params_of, target_params) -> None:
    """Give layers back a block of ``align`` units while the target holds (in place)."""
    order = []
    for position, component in enumerate(sequence):
        if selected[position]:
            order += [name for name in component.layers if name not in order]
    for name in order:
        trial = list(selected)
        kept = widths[name] - _removed(trial, sequence)[name]
        want = min(widths[name], kept + align)
        count = kept
        for position in range(len(sequence) - 1, -1, -1):
            component = sequence[position]
            if count >= want or not trial[position] or name not in component.layers:
                continue
            if component.layers != (name,) or count + component.count(name) > want:
                continue  # only the layer's own components: coupled ones move others too
            trial[position] = False
            count += component.count(name)
        if count == want and params_of(_chosen(trial, sequence)) <= target_params:
            selected[:] = trial


def _longer_prefixes(prefix: int, total: int) -> list[int]:
    """``prefix``, then prefixes longer by 1, 2, 4 ... components, and the whole ranking."""
    starts, step = [prefix], 1
    while starts[-1] < total:
        starts.append(min(total, prefix + step))
        step *= 2
    return starts


def _chosen(selected: Sequence[bool], sequence: Sequence[Component]) -> list[Component]:
    return [component for chosen, component in zip(selected, sequence, strict=True) if chosen]
