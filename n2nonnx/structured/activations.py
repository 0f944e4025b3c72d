"""Per-unit activations of layers on a class-balanced data sample, read from the backend's run.

The layers' output tensors (after their BatchNorm / activation chain) are made extra graph
outputs of a copy of the model, which :class:`~n2nonnx.backend.OnnxModule` then runs in
eval mode; each unit's activation is averaged over the spatial positions (conv channels)
or tokens, giving one ``(samples, units)`` matrix per layer. The module is kept, so that
callers can zero weights in place and run again (:class:`ActivationProbe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from n2nonnx.errors import DataError
from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model


@dataclass(frozen=True)
class Sample:
    """The class-balanced inputs scored: ``x`` (model input layout) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray


def class_sample(x: np.ndarray, y: np.ndarray, per_class: int, seed: int) -> Sample:
    """Up to ``per_class`` samples of every class, drawn without replacement.

    Args:
        x: inputs, batch first.
        y: integer labels.
        per_class: samples wanted per class (a class with fewer gives all it has).
        seed: seed of the draw.

    Returns:
        The sample, classes in ascending order.

    Raises:
        DataError: no samples, or ``per_class`` < 1.
    """
    if per_class < 1:
        raise DataError(f"samples_per_class must be >= 1, got {per_class}")
    if len(y) == 0:
        raise DataError("the data has no training samples to score the units with")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = min(per_class, len(members))
        chosen.append(np.sort(rng.choice(members, size=take, replace=False)))
    index = np.concatenate(chosen)
    return Sample(np.ascontiguousarray(x[index]), np.asarray(y[index]))


def unit_means(values: np.ndarray, unit_axis: int) -> np.ndarray:
    """``(N, units)``: a tensor averaged over every axis but the batch and the units' axis."""
    moved = np.moveaxis(values, unit_axis, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1).mean(axis=2)


class ActivationProbe:
    """Runs a model on a fixed sample and returns the per-unit activations of chosen layers.

    Args:
        model: the model.
        layers: the layers to observe.
        sample: the inputs.
        batch_size: samples per forward pass.
        raw: names of further tensors returned whole by :meth:`tensors`.
    """

    def __init__(
        self,
        model: Model,
        layers: Sequence[Layer],
        sample: Sample,
        batch_size: int = 512,
        raw: Sequence[str] = (),
    ) -> None:
        import torch

        from n2nonnx.backend import OnnxModule

        self.layers = list(layers)
        self.sample = sample
        self.batch_size = batch_size
        proto = onnx.ModelProto()
        proto.CopyFrom(model.proto)
        existing = {o.name for o in proto.graph.output}
        self._tensors = [layer.output for layer in self.layers]
        self.raw = list(dict.fromkeys(raw))
        for name in dict.fromkeys(self._tensors + self.raw):
            if name not in existing:
                proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        self._names = [o.name for o in proto.graph.output]
        self.module = OnnxModule(proto).eval()
        self._torch = torch

    def weight(self, name: str):
        """The live tensor of initializer ``name`` (edit in place, then :meth:`run`)."""
        return self.module.tensor(name)

    def run(self, only: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Per-unit activations: layer name -> ``(samples, units)`` float64.

        Args:
            only: names of the layers wanted (default: all observed layers).
        """
        wanted = [la for la in self.layers if only is None or la.name in set(only)]
        chunks: dict[str, list[np.ndarray]] = {la.name: [] for la in wanted}
        for by_name in self._batches():
            for layer in wanted:
                value = by_name[layer.output].detach().float().numpy()
                chunks[layer.name].append(unit_means(value, layer.out_feature_axis))
        return {name: np.concatenate(parts).astype(np.float64) for name, parts in chunks.items()}

    def tensors(self) -> dict[str, np.ndarray]:
        """The ``raw`` tensors on the whole sample, as they are (float32)."""
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.raw}
        for by_name in self._batches():
            for name in self.raw:
                chunks[name].append(by_name[name].detach().float().numpy())
        return {name: np.concatenate(parts) for name, parts in chunks.items()}

    def _batches(self):
        torch = self._torch
        x = self.sample.x
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                outputs = self.module(torch.from_numpy(x[start : start + self.batch_size]))
                if not isinstance(outputs, tuple):
                    outputs = (outputs,)
                yield dict(zip(self._names, outputs, strict=True))


def collect_activations(
    model: Model, layers: Sequence[Layer], sample: Sample, batch_size: int = 512
) -> Mapping[str, np.ndarray]:
    """Per-unit activations of ``layers`` on ``sample`` (see :class:`ActivationProbe`).

    Args:
        model: the model.
        layers: layers to observe.
        sample: the inputs (see :func:`class_sample`).
        batch_size: samples per forward pass.

    Returns:
        Layer name -> ``(samples, units)`` activations, spatially averaged.
    """
    return ActivationProbe(model, layers, sample, batch_size).run()
