"""``ai.onnx.ml`` ops that scikit-learn exports (skl2onnx) put around their neural and linear parts.

ArrayFeatureExtractor (the label lookup after ArgMax), Normalizer, Scaler, Binarizer,
LinearClassifier and LinearRegressor. String-valued variants (string class labels, ZipMap's
sequence of maps) have no torch counterpart and are refused with the fix: export with
integer labels and ``zipmap=False`` (what ``converters.sklearn`` does).
"""

from __future__ import annotations

import numpy as np
import torch

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec
from n2nonnx.errors import UnsupportedOpError

ML = "ai.onnx.ml"


@register_op("ArrayFeatureExtractor", domain=ML, versions=(1,))
def array_feature_extractor(spec: NodeSpec) -> Kernel:
    """``Y = X[..., indices]``: select entries along the last axis (flattened indices).

    A 1-D ``X`` gives a ``(1, len(indices))`` result, as onnxruntime does.
    """

    def kernel(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        flat = indices.reshape(-1).long()
        if x.dim() == 1:
            return x[flat].unsqueeze(0)
        return x.index_select(x.dim() - 1, flat)

    return kernel


@register_op("Normalizer", domain=ML, versions=(1,))
def normalizer(spec: NodeSpec) -> Kernel:
    """Row-wise normalisation by the ``MAX``, ``L1`` or ``L2`` norm (output float)."""
    norm = spec.attr("norm", "MAX")
    if norm not in ("MAX", "L1", "L2"):
        raise UnsupportedOpError(
            f"node {spec.name!r} (Normalizer): norm {norm!r} is not MAX, L1 or L2"
        )

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.float() if not x.is_floating_point() else x
        if norm == "MAX":
            scale = x.amax(dim=-1, keepdim=True)
        elif norm == "L1":
            scale = x.abs().sum(dim=-1, keepdim=True)
        else:
            scale = x.pow(2).sum(dim=-1, keepdim=True).sqrt()
        return x / scale

    return kernel


@register_op("Scaler", domain=ML, versions=(1,))
def scaler(spec: NodeSpec) -> Kernel:
    """``(x - offset) * scale`` with per-feature or single offset / scale (output float)."""
    offset = torch.tensor(np.asarray(spec.attr("offset", [0.0]), dtype=np.float32))
    scale = torch.tensor(np.asarray(spec.attr("scale", [1.0]), dtype=np.float32))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.float() if not x.is_floating_point() else x
        return (x - offset.to(x.device, x.dtype)) * scale.to(x.device, x.dtype)

    return kernel


@register_op("Binarizer", domain=ML, versions=(1,))
def binarizer(spec: NodeSpec) -> Kernel:
    """``x > threshold`` as 1 / 0 in the input's type."""
    threshold = float(spec.attr("threshold", 0.0))
    return lambda x: (x > threshold).to(x.dtype)


def _post_transform(name: str, spec: NodeSpec):
    if name == "NONE":
        return lambda z: z
    if name == "LOGISTIC":
        return torch.sigmoid
    if name == "SOFTMAX":
        return lambda z: torch.softmax(z, dim=-1)
    if name == "SOFTMAX_ZERO":

        def softmax_zero(z: torch.Tensor) -> torch.Tensor:
            exp = torch.where(
                z == 0, torch.zeros_like(z), torch.exp(z - z.amax(dim=-1, keepdim=True))
            )
            return exp / exp.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)

        return softmax_zero
    raise UnsupportedOpError(
        f"node {spec.name!r} ({spec.op_type}): post_transform {name!r} is not supported"
    )


def _linear_scores(spec: NodeSpec, targets: int) -> tuple[torch.Tensor, torch.Tensor]:
    coefficients = np.asarray(spec.attr("coefficients"), dtype=np.float32)
    intercepts = np.asarray(spec.attr("intercepts", [0.0] * targets), dtype=np.float32)
    return torch.tensor(coefficients.reshape(targets, -1)), torch.tensor(intercepts)


@register_op("LinearRegressor", domain=ML, versions=(1,))
def linear_regressor(spec: NodeSpec) -> Kernel:
    """``post(x @ W.T + b)`` with ``targets`` outputs (coefficients as attributes)."""
    targets = int(spec.attr("targets", 1))
    weight, bias = _linear_scores(spec, targets)
    post = _post_transform(spec.attr("post_transform", "NONE"), spec)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.float() if not x.is_floating_point() else x
        return post(x @ weight.to(x.device, x.dtype).T + bias.to(x.device, x.dtype))

    return kernel


@register_op("LinearClassifier", domain=ML, versions=(1,))
def linear_classifier(spec: NodeSpec) -> Kernel:
    """Label and scores of a linear classifier (integer class labels only).

    One class weight row on two classes (binary logistic regression) gives the scores
    ``[-z, z]`` before the post transform, as onnxruntime does.
    """
    labels = spec.attr("classlabels_ints")
    if labels is None:
        raise UnsupportedOpError(
            f"node {spec.name!r} (LinearClassifier) has string class labels, which torch cannot "
            "hold; export the classifier with integer labels"
        )
    labels_t = torch.tensor(np.asarray(labels, dtype=np.int64))
    coefficients = np.asarray(spec.attr("coefficients"), dtype=np.float32)
    rows = len(spec.attr("intercepts", [])) or max(1, coefficients.size // max(1, len(labels)))
    weight = torch.tensor(coefficients.reshape(rows, -1))
    bias = torch.tensor(np.asarray(spec.attr("intercepts", [0.0] * rows), dtype=np.float32))
    post_name = spec.attr("post_transform", "NONE")
    post = _post_transform(post_name, spec)
    binary = rows == 1 and len(labels) == 2

    def kernel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float() if not x.is_floating_point() else x
        z = x @ weight.to(x.device, x.dtype).T + bias.to(x.device, x.dtype)
        if binary:
            if post_name == "LOGISTIC":
                positive = torch.sigmoid(z)
                scores = torch.cat([1 - positive, positive], dim=-1)
            else:
                scores = post(torch.cat([-z, z], dim=-1))
        else:
            scores = post(z)
        return labels_t.to(x.device)[scores.argmax(dim=-1)], scores

    return kernel
