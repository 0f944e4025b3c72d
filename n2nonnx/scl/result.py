"""What :func:`n2nonnx.scl.learn_masks` returns: the model, learned densities and traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LearnedLayer:
    """Connections SCL kept in one weight.

    Attributes:
        layer: the layer's name.
        weight: the weight initializer.
        kept: non-zero connections after the masks were frozen.
        total: entries of the weight.
        is_skip: an N2NSkip weight.
    """

    layer: str
    weight: str
    kept: int
    total: int
    is_skip: bool

    @property
    def density(self) -> float:
        """Kept over total entries."""
        return self.kept / max(self.total, 1)


@dataclass
class SclResult:
    """The outcome of SCL.

    Attributes:
        model: the masked, trained model (an ordinary masked model with a ``prune`` record
            whose method is ``scl``, followed by the ``train`` record of the fine-tuning).
        layers: per learned weight, the connections kept.
        density: kept connections over the reference count (the dense sequential weights).
        learned_density: the density the search itself reached (``m > 0`` at its end),
            before the target mode's exact top-k.
        reached: whether the search reached the target within the tolerance (free mode:
            always True).
        skip_split: ``sequential_nonzeros`` and ``skip_nonzeros`` of the learned masks.
        lambdas: lambda at every search step.
        kept_trace: connections on after every search step.
        history: per-epoch records, search epochs then fine-tuning epochs
            (an :class:`n2nonnx.training.History`).
        record: the provenance record written into the model.
    """

    model: Any
    layers: list[LearnedLayer]
    density: float
    learned_density: float
    reached: bool
    skip_split: dict[str, int]
    lambdas: list[float] = field(repr=False)
    kept_trace: list[int] = field(repr=False)
    history: Any = field(repr=False)
    record: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def masks(self) -> dict[str, Any]:
        """Weight name -> learned 0/1 mask (read from the model)."""
        from n2nonnx.masks import mask_arrays

        found = mask_arrays(self.model)
        return {layer.weight: found[layer.weight] for layer in self.layers}
