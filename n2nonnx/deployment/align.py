"""Aligned unit removal: keep a few removable units so that kept widths are multiples of N.

onnxruntime's fast blocked convolution (NCHWc; block 16 on AVX-512, 8 on AVX2) runs only
for some input channel counts: multiples of the block, and (onnxruntime 1.32, measured)
counts below the block or multiples of 4, padded to the block inside. Removing a few dead
units (64 -> 53, 128 -> 126) sends the convolution to a generic kernel at about half the
speed, with layout reorders around it. Keeping some of the removable units instead is exact (they are
dead: keeping one changes nothing the model computes) and keeps the fast kernel.

The rule, for every layer (its kept units are the next layer's input channels, whatever
the next layer is):

* a layer that loses units keeps ``ceil(kept / N) * N`` of them, the removable units
  with the most non-zero weights first (ties: the lower index), when that does not exceed
  its full width;
* a layer whose full width is not a multiple of ``N`` and whose kept count cannot be
  rounded up within it keeps the exact removal (fewest units): it cannot be aligned
  either way, and the fewest channels are the fastest of the unaligned widths;
* units joined with a kept unit (a residual Add, an N2NSkip Add, a convolution group)
  are kept too (:meth:`~n2nonnx.deployment.dead.DeadUnits.settle`). That can break the
  alignment of another layer, so the two steps repeat to a fixpoint; it terminates since
  each round only keeps more units.

Alignment only keeps units: it never removes a unit the exact removal keeps.
"""

from __future__ import annotations

import numpy as np

from n2nonnx.deployment.dead import DeadUnits
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model


def check_align(align: object) -> int:
    """``align`` if it is a usable alignment (an int >= 0; 0 or 1: none), else an error.

    Raises:
        InvalidArgumentError: not an integer, or negative.
    """
    if isinstance(align, bool) or not isinstance(align, int | np.integer):
        raise InvalidArgumentError(f"align must be an integer >= 0 (0: off), got {align!r}")
    if align < 0:
        raise InvalidArgumentError(f"align must be an integer >= 0 (0: off), got {align}")
    return int(align)


def unit_weights(model: Model) -> dict[str, np.ndarray]:
    """Layer name -> non-zero weights of each output unit (its filter / row)."""
    counts = {}
    for layer in model.layers:
        weight = np.moveaxis(np.asarray(model.effective_weight(layer)), layer.unit_axis, 0)
        counts[layer.name] = np.count_nonzero(weight.reshape(layer.units, -1), axis=1)
    return counts


def aligned_removal(model: Model, dead: DeadUnits, align: int) -> DeadUnits:
    """Narrow a dead-unit removal so that every layer keeps a multiple of ``align`` units.

    Args:
        model: the model ``dead`` was found in (masks folded).
        dead: a :func:`~n2nonnx.deployment.dead.find_dead_units` result.
        align: the multiple (0 or 1: ``dead`` unchanged).

    Returns:
        A :class:`~n2nonnx.deployment.dead.DeadUnits` removing a subset of ``dead.remove``
        (see the module docstring for the rule).

    Raises:
        InvalidArgumentError: ``align`` is not an integer >= 0.
    """
    align = check_align(align)
    if align <= 1 or not dead.remove:
        return dead
    removed = dead.candidates()
    assert dead.analysis is not None  # candidates() checked it
    layers = dead.analysis.layers
    weights = unit_weights(model)
    changed = True
    while changed:
        changed = False
        for layer in layers:
            mine = removed[layer.name]
            kept = layer.units - int(mine.sum())
            target = -(-kept // align) * align
            if target == kept or target > layer.units:
                continue
            candidates = np.flatnonzero(mine)
            order = np.lexsort((candidates, -weights[layer.name][candidates]))
            mine[candidates[order[: target - kept]]] = False
            # settle before the next layer looks: units joined with these (a residual
            # Add) are kept with them, and their layers may be aligned by that already
            dead.settle(removed)
            changed = True
    return dead.restricted(model, removed)


def kept_widths(model: Model, dead: DeadUnits) -> dict[str, list[int]]:
    """Layer name -> [full width, kept width] for the layers that ``dead`` narrows."""
    return {
        layer.name: [layer.units, layer.units - len(dead.remove[layer.name])]
        for layer in model.layers
        if layer.name in dead.remove
    }
