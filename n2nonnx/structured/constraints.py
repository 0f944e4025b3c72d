"""Operating constraints: how far each layer may be pruned, from a linear classifier sweep.

For a layer ``l``, its units are removed in SNACS order (lowest score first) at
1, 3, .., 97 percent of its units; for each level, the activations of the layers that
read ``l`` (its children, concatenated) are recomputed with those units silenced, and a
linear classifier trained on the children's *original* activations (with the sample's
labels) is scored on them. With ``a_max`` / ``a_min`` the best and worst accuracy of the
sweep, the layer's upper limit is the largest percentage whose accuracy is
``>= a_max - rule * (a_max - a_min)`` (the authors' rule, ``rule = 0.7``). A flat sweep
(``a_max == a_min``) allows 97%.

Silencing a unit zeroes the input columns it feeds in every child (what removing it does,
see :func:`~n2nonnx.units.remove_units`); only the child layer and its
chain are recomputed, from its cached input. The classifier is linear, on standardised
features: least-squares one-vs-rest (``lstsq``, the default: closed form, about 100x faster
than the SVM here) or scikit-learn's ``LinearSVC`` (``svm``, as the paper).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model
from n2nonnx.structured.activations import ActivationProbe, Sample, unit_means
from n2nonnx.units.coupling import consumer_columns

if TYPE_CHECKING:
    import torch

PERCENTS = tuple(range(1, 98, 2))
CLASSIFIERS = ("lstsq", "svm")


class _Classifier:
    def __init__(self, kind: str, features: np.ndarray, labels: np.ndarray, seed: int) -> None:
        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0)
        self.scale[self.scale < 1e-12] = 1.0
        x = (features - self.mean) / self.scale
        self.classes = np.unique(labels)
        if kind == "svm":
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.svm import LinearSVC

            self.model = LinearSVC(random_state=seed, dual=False, max_iter=2000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.model.fit(x, labels)
            self.coef = None
        else:
            targets = (labels[:, None] == self.classes[None, :]).astype(np.float64) * 2 - 1
            design = np.hstack([x, np.ones((len(x), 1))])
            gram = design.T @ design + 1e-3 * np.eye(design.shape[1])
            self.coef = np.linalg.solve(gram, design.T @ targets)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        x = (features - self.mean) / self.scale
        if self.coef is None:
            predicted = self.model.predict(x)
        else:
            predicted = self.classes[
                np.argmax(np.hstack([x, np.ones((len(x), 1))]) @ self.coef, axis=1)
            ]
        return float(np.mean(predicted == labels))


class ChildRunner:
    """Recomputes one child layer's per-unit activations from its cached input tensor.

    Only the child's node and its chain run (a subgraph from ``child.input`` to
    ``child.output``); its weights can be edited in place through :meth:`weight`.
    """

    def __init__(
        self, model: Model, child: Layer, inputs: np.ndarray, batch_size: int = 512
    ) -> None:
        import torch
        from onnx.utils import Extractor

        from n2nonnx.backend import OnnxModule

        sub = Extractor(model.proto).extract_model([child.input], [child.output])
        self.module = OnnxModule(sub).eval()
        self.child = child
        self.inputs = inputs
        self.batch_size = batch_size
        self._torch = torch

    def weight(self, name: str) -> torch.Tensor:
        """The live torch tensor of initializer ``name`` in the child's module.

        Args:
            name: the ONNX initializer name.

        Returns:
            The tensor; edits to it change what :meth:`run` computes.
        """
        return self.module.tensor(name)

    def run(self) -> np.ndarray:
        """``(samples, units)`` activations of the child."""
        parts = []
        with self._torch.no_grad():
            for start in range(0, len(self.inputs), self.batch_size):
                out = self.module(
                    self._torch.from_numpy(self.inputs[start : start + self.batch_size])
                )
                parts.append(unit_means(out.float().numpy(), self.child.out_feature_axis))
        return np.concatenate(parts).astype(np.float64)


def silence(runner: ChildRunner, columns: np.ndarray) -> None:
    """Zero, in the runner's live weights, the input ``columns`` of its child layer."""
    child = runner.child
    if len(columns) == 0:
        return
    weight = runner.weight(child.weight)
    if child.groups == 1 or child.op == "ConvTranspose":
        index: list[slice | np.ndarray] = [slice(None)] * weight.ndim
        index[child.in_axis] = columns
        weight.data[tuple(index)] = 0
        return
    per_in, per_out = child.in_units // child.groups, child.units // child.groups
    for column in columns.tolist():
        group = column // per_in
        weight.data[group * per_out : (group + 1) * per_out, column % per_in] = 0


def limit_from_sweep(
    accuracies: Sequence[float], percents: Sequence[int] = PERCENTS, rule: float = 0.7
) -> float:
    """The largest percentage whose accuracy is ``>= max - rule * (max - min)``, as a fraction."""
    values = np.asarray(accuracies, dtype=np.float64)
    bar = values.max() - rule * (values.max() - values.min())
    return float(percents[int(np.flatnonzero(values >= bar - 1e-12)[-1])]) / 100.0


def upper_limits(
    model: Model,
    sample: Sample,
    parents: Sequence[Layer],
    order: Mapping[str, np.ndarray],
    children: Mapping[str, list[Layer]],
    *,
    rule: float = 0.7,
    classifier: str = "lstsq",
    seed: int = 0,
) -> dict[str, float]:
    """Per-layer upper limits (fractions of its units) from the classifier sweep.

    Args:
        model: the model.
        sample: the inputs and labels activations are computed on.
        parents: the layers to limit.
        order: layer name -> its removable units, lowest score first.
        children: layer name -> the layers reading it.
        rule: the tolerance factor (0.7 in the authors' code).
        classifier: ``lstsq`` or ``svm``.
        seed: seed of the SVM.

    Returns:
        Layer name -> upper limit in (0, 0.97].
    """
    if classifier not in CLASSIFIERS:
        raise InvalidArgumentError(
            f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}"
        )
    if not 0 <= rule <= 1:
        raise InvalidArgumentError(f"the constraint rule factor must be in [0, 1], got {rule}")
    readers = {c.name: c for cs in children.values() for c in cs}
    captured = ActivationProbe(model, [], sample, raw=[c.input for c in readers.values()]).tensors()
    runners = {
        name: ChildRunner(model, child, captured[child.input]) for name, child in readers.items()
    }
    originals = {name: runner.run() for name, runner in runners.items()}
    labels = sample.y
    limits = {}
    for parent in parents:
        names = [c.name for c in children[parent.name]]
        fitted = _Classifier(classifier, np.hstack([originals[n] for n in names]), labels, seed)
        columns = {n: consumer_columns(readers[n], parent.name) for n in names}
        saved = {n: runners[n].weight(readers[n].weight).detach().clone() for n in names}
        cache: dict[int, float] = {}
        accuracies = []
        ranked = order[parent.name]
        for percent in PERCENTS:
            count = min(int(math.ceil(percent / 100.0 * parent.units)), len(ranked))
            if count not in cache:
                removed = set(ranked[:count].tolist())
                after = []
                for n in names:
                    picked = [cols for unit, cols in columns[n].items() if unit in removed]
                    silence(runners[n], np.concatenate(picked) if picked else np.zeros(0, np.int64))
                    after.append(runners[n].run())
                    runners[n].weight(readers[n].weight).data.copy_(saved[n])
                cache[count] = fitted.accuracy(np.hstack(after), labels)
            accuracies.append(cache[count])
        limits[parent.name] = limit_from_sweep(accuracies, PERCENTS, rule)
    return limits
