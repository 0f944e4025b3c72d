"""The regulariser weight lambda at each step: fixed (free mode) or steered to a density schedule.

The mask update is ``m <- m - mask_lr * (g + lambda)``, ``g`` the per-unit normalised task
gradient. Lambda moves every mask variable by the same amount, so at each step the count of
connections left on is a decreasing function of lambda. The target-density controller uses
that: it sets lambda to the *smallest value >= 0* that leaves at most ``k(t)`` connections
on, where ``k(t)`` follows a schedule:

- warm-up (the first ``warmup`` fraction of the search): ``k`` = every candidate, so lambda
  is 0 and the mask variables only collect task gradient;
- then a cubic decline ``k(t) = k_target + (k_start - k_target) (1 - p)^3`` (fast first,
  gentle near the target, as in gradual magnitude pruning), ``p`` going 0 -> 1 until the
  ``reach`` fraction of the search;
- then ``k_target`` until the masks are frozen.

Since lambda shifts every ``m`` alike, the ranking of the mask variables (and so the masks
this mode learns) follows the accumulated normalised task gradient; ``mask_init`` and
``mask_lr`` matter only where lambda is 0 (they set how fast the task gradient alone switches
connections off) and in the reported lambda, ``shift / mask_lr``.

Lambda never goes negative (the regulariser never rewards connections): if the task
gradient alone switches more connections off than the schedule asks, the density falls
below it. ``max_lambda`` bounds lambda; then the target may be missed, which
:func:`n2nonnx.scl.learn_masks` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WARMUP = 0.1
REACH = 0.75


@dataclass
class FixedLambda:
    """Free mode: the same lambda at every step."""

    scl_lambda: float

    def shift(self, step: int, proposals: list[torch.Tensor], mask_lr: float) -> float:
        """The amount every mask variable moves down by this step (``mask_lr * lambda``)."""
        return mask_lr * self.scl_lambda


@dataclass
class TargetDensity:
    """Target mode: lambda steered so the number of connections follows the schedule.

    Attributes:
        start: connections on at the start (every candidate).
        target: connections wanted at the end of the search.
        steps: optimisation steps of the search phase.
        warmup: fraction of the search with lambda = 0.
        reach: fraction of the search at which the target is reached.
        max_lambda: upper bound of lambda (None: unbounded).
    """

    start: int
    target: int
    steps: int
    warmup: float = WARMUP
    reach: float = REACH
    max_lambda: float | None = None

    def wanted(self, step: int) -> int:
        """Connections the schedule allows after ``step`` (0-based)."""
        begin, end = self.warmup * self.steps, self.reach * self.steps
        progress = 1.0 if end <= begin else min(max((step + 1 - begin) / (end - begin), 0.0), 1.0)
        return int(round(self.target + (self.start - self.target) * (1.0 - progress) ** 3))

    def shift(self, step: int, proposals: list[torch.Tensor], mask_lr: float) -> float:
        """The smallest shift >= 0 of all mask variables that leaves ``wanted(step)`` on.

        Args:
            step: the step (0-based) within the search.
            proposals: the mask variables after the task-gradient part of the update.
            mask_lr: the mask learning rate (the shift is ``mask_lr * lambda``).

        Returns:
            The shift to subtract from every mask variable.
        """
        keep = self.wanted(step)
        values = torch.cat([p.reshape(-1) for p in proposals])
        if keep >= values.numel():
            return 0.0
        # the (keep + 1)-th largest value moves to exactly 0 (off); the keep larger stay on
        threshold = float(torch.kthvalue(values, values.numel() - keep).values)
        shift = max(threshold, 0.0)
        if self.max_lambda is not None:
            shift = min(shift, mask_lr * self.max_lambda)
        return shift


def lambda_of(shift: float, mask_lr: float) -> float:
    """The regulariser weight that a shift corresponds to."""
    return shift / mask_lr if mask_lr > 0 and math.isfinite(shift) else 0.0
