"""Resize and Upsample: separable interpolation by per-axis coefficient matrices.

Each resized axis gets an (out, in) matrix built with ONNX's reference rules (coordinate
transformation, nearest rounding, linear / cubic coefficients, antialias, exclude_outside,
edge clamping); the tensor is multiplied by it along that axis. Matrices are cached per
input shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from n2nonnx.backend.ops._util import int_list
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec


def _source_coordinate(
    x: int, mode: str, scale: float, size_in: int, size_out: int, roi: Sequence[float] | None
) -> float:
    width = scale * size_in
    # like onnxruntime, align_corners and tf_crop_and_resize use the integer output size
    if mode == "align_corners":
        return 0.0 if size_out == 1 else x * (size_in - 1) / (size_out - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":  # opset 11 only
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if size_out == 1:
            origin = (end - start) * (size_in - 1) / 2
        else:
            origin = x * (end - start) * (size_in - 1) / (size_out - 1)
        return origin + start * (size_in - 1)
    if mode == "pytorch_half_pixel":
        return -0.5 if width == 1 else (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = size_out / width
        return size_in / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5


def _coefficients(
    kind: str, ratio: float, scale: float, nearest_mode: str, cubic_a: float, antialias: bool
) -> np.ndarray:
    if kind == "nearest":
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        return {
            "round_prefer_floor": np.array([ratio <= 0.5, ratio > 0.5], dtype=float),
            "round_prefer_ceil": np.array([ratio < 0.5, ratio >= 0.5], dtype=float),
            "floor": np.array([1.0, 0.0]),
            "ceil": np.array([0.0, 1.0]),
        }[nearest_mode]
    if kind == "linear":
        if not antialias:
            return np.array([1 - ratio, ratio])
        shrink = min(scale, 1.0)
        start = int(np.floor(-1 / shrink) + 1)
        args = (np.arange(start, start + 2 - 2 * start) - ratio) * shrink
        coeffs = np.clip(1 - np.abs(args), 0, 1)
        return coeffs / coeffs.sum()
    a = cubic_a
    if not antialias:
        r = ratio
        return np.array(
            [
                ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                ((a + 2) * r - (a + 3)) * r * r + 1,
                ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
                ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a,
            ]
        )
    shrink = min(scale, 1.0)

    def cubic(value: float) -> float:
        value = abs(value)
        if value <= 1:
            return (a + 2) * value**3 - (a + 3) * value**2 + 1
        if value < 2:
            return a * value**3 - 5 * a * value**2 + 8 * a * value - 4 * a
        return 0.0

    start = int(np.floor(-2 / shrink) + 1)
    coeffs = np.array([cubic(shrink * (i - ratio)) for i in range(start, 2 - start)])
    return coeffs / coeffs.sum()


def axis_matrix(
    size_in: int, size_out: int, scale: float, options: dict, roi: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (out, in) interpolation matrix and the rows to fill with the extrapolation value."""
    matrix = np.zeros((size_out, size_in))
    outside = np.zeros(size_out, dtype=bool)
    for x in range(size_out):
        origin = _source_coordinate(x, options["coordinate"], scale, size_in, size_out, roi)
        if options["coordinate"] == "tf_crop_and_resize" and (origin < 0 or origin > size_in - 1):
            outside[x] = True
            continue
        ratio = 1.0 if float(origin).is_integer() else origin - math.floor(origin)
        coeffs = _coefficients(
            options["mode"],
            ratio,
            scale,
            options["nearest_mode"],
            options["cubic_a"],
            options["antialias"],
        )
        count = len(coeffs)
        base = (
            math.ceil(origin) - 1 - (count // 2 - 1)
            if count % 2 == 0
            else round(origin) - count // 2
        )
        positions = np.arange(base, base + count)
        if options["exclude_outside"]:
            coeffs = np.where((positions < 0) | (positions >= size_in), 0.0, coeffs)
            coeffs = coeffs / coeffs.sum()
        for position, coeff in zip(np.clip(positions, 0, size_in - 1), coeffs, strict=True):
            matrix[x, position] += coeff
    return matrix, outside


def _full_roi(roi: list[float] | None, axes: list[int], rank: int) -> list[float] | None:
    """The ``roi`` input (starts then ends over ``axes``) spread over every axis, or ``None``."""
    if roi is None or not len(roi):
        return None
    full_roi = [0.0] * rank + [1.0] * rank
    for i, axis in enumerate(axes):
        full_roi[axis], full_roi[rank + axis] = roi[i], roi[len(axes) + i]
    return full_roi


def _axis_targets(
    shape: list[int],
    axes: list[int],
    scales: list[float] | None,
    sizes: list[int] | None,
    policy: str,
) -> tuple[dict[int, float], dict[int, int]]:
    """The scale factor and output size of each resized axis.

    Args:
        shape: the input shape.
        axes: the resized axes (non-negative).
        scales: the ``scales`` input over ``axes``, or ``None``.
        sizes: the ``sizes`` input over ``axes``, or ``None`` (it wins over ``scales``).
        policy: ``keep_aspect_ratio_policy`` (``stretch``, ``not_larger`` or ``not_smaller``).

    Returns:
        (axis -> scale factor, axis -> output size).
    """
    if sizes is None:
        factors = {} if scales is None else {axis: float(scales[i]) for i, axis in enumerate(axes)}
        return factors, {axis: int(factors[axis] * shape[axis]) for axis in axes}
    factors = {axis: sizes[i] / shape[axis] for i, axis in enumerate(axes)}
    outs = {axis: sizes[i] for i, axis in enumerate(axes)}
    if policy != "stretch":
        pick = min if policy == "not_larger" else max
        scale = pick(factors.values())
        factors = dict.fromkeys(axes, scale)
        outs = {axis: int(scale * shape[axis] + 0.5) for axis in axes}
    return factors, outs


def _resize_plan(
    shape: list[int],
    scales: list[float] | None,
    sizes: list[int] | None,
    roi: list[float] | None,
    axes_attr: list[int] | None,
    policy: str,
    options: dict,
) -> list:
    """The per-axis interpolation steps for one input shape and scales / sizes / roi.

    Returns:
        (axis, interpolation matrix, rows to extrapolate or ``None``) for every axis that
        changes; axes left as they are (scale 1, same size, full roi) are skipped.
    """
    rank = len(shape)
    axes = [a % rank for a in axes_attr] if axes_attr is not None else list(range(rank))
    full_roi = _full_roi(roi, axes, rank)
    factors, outs = _axis_targets(shape, axes, scales, sizes, policy)
    steps = []
    for axis in axes:
        axis_roi = None if full_roi is None else (full_roi[axis], full_roi[rank + axis])
        full_range = axis_roi is None or (
            math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0)
        )
        if math.isclose(factors[axis], 1.0) and outs[axis] == shape[axis] and full_range:
            continue
        matrix, outside = axis_matrix(shape[axis], outs[axis], factors[axis], options, axis_roi)
        rows = torch.from_numpy(outside) if outside.any() else None
        steps.append((axis, torch.from_numpy(matrix), rows))
    return steps


def _resize_kernel(
    spec: NodeSpec,
    options: dict,
    scales_index: int | None,
    sizes_index: int | None,
    roi_index: int | None,
    static_scales: list[float] | None = None,
) -> Kernel:
    axes_attr = spec.attr("axes")
    policy = spec.attr("keep_aspect_ratio_policy", "stretch")
    cache: dict = {}

    def read(
        tensor: torch.Tensor | None, index: int | None, cast: Callable[[Any], list]
    ) -> list | None:
        if index is None or not spec.has_input(index):
            return None
        value = spec.const(index) if tensor is None else tensor
        if value is None:
            return None
        values = cast(value)
        return values if len(values) else None

    def kernel(x: torch.Tensor, *rest: torch.Tensor | None) -> torch.Tensor:
        args: dict[int | None, torch.Tensor | None] = {i + 1: t for i, t in enumerate(rest)}
        scales = static_scales or read(args.get(scales_index), scales_index, _floats)
        sizes = read(args.get(sizes_index), sizes_index, int_list)
        roi = read(args.get(roi_index), roi_index, _floats)
        key = (tuple(x.shape), tuple(scales or ()), tuple(sizes or ()), tuple(roi or ()))
        steps = cache.get(key)
        if steps is None:
            steps = _resize_plan(list(x.shape), scales, sizes, roi, axes_attr, policy, options)
            cache[key] = steps
        work_type = x.dtype if x.is_floating_point() else torch.float64
        y = x.to(work_type)
        for axis, matrix, outside in steps:
            y = torch.matmul(y.movedim(axis, -1), matrix.to(work_type).to(x.device).t())
            if outside is not None:
                y = y.masked_fill(outside.to(x.device), options["extrapolation"])
            y = y.movedim(-1, axis)
        if not x.is_floating_point():
            info = torch.iinfo(x.dtype)
            y = y.round().clamp(info.min, info.max)
        return y.to(x.dtype)

    return kernel


def _floats(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    return [float(v) for v in np.asarray(value).reshape(-1).tolist()]


def _options(spec: NodeSpec, coordinate_default: str, nearest_default: str) -> dict:
    mode = spec.attr("mode", "nearest")
    return {
        "mode": {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode),
        "coordinate": spec.attr("coordinate_transformation_mode", coordinate_default),
        "nearest_mode": spec.attr("nearest_mode", nearest_default),
        "cubic_a": spec.attr("cubic_coeff_a", -0.75),
        "antialias": bool(spec.attr("antialias", 0)),
        "exclude_outside": bool(spec.attr("exclude_outside", 0)),
        "extrapolation": spec.attr("extrapolation_value", 0.0),
    }


@register_op("Resize", versions=(10,))
def resize_10(spec: NodeSpec) -> Kernel:
    """Resize (opset 10): X, scales; asymmetric coordinates, nearest rounds down."""
    return _resize_kernel(spec, _options(spec, "asymmetric", "floor"), 1, None, None)


@register_op("Resize", versions=(11, 13, 18, 19))
def resize(spec: NodeSpec) -> Kernel:
    """Resize (opset 11+): X, roi, scales, sizes with every ONNX mode and option.

    Opset 13 dropped ``tf_half_pixel_for_nn``, 18 added ``antialias``, ``axes`` and
    ``keep_aspect_ratio_policy``, 19 ``half_pixel_symmetric``.
    """
    return _resize_kernel(spec, _options(spec, "half_pixel", "round_prefer_floor"), 2, 3, 1)


# Upsample-1 (height_scale / width_scale attributes) is not implemented; Upsample-10 is
# deprecated (removed from ONNX: the checker and onnxruntime reject it)
@register_op("Upsample", versions=(7, 9))
def upsample(spec: NodeSpec) -> Kernel:
    """Upsample: ``scales`` attribute (opset 7) or input (opset 9)."""
    scales = spec.attr("scales")
    return _resize_kernel(
        spec,
        _options(spec, "asymmetric", "floor"),
        1,
        None,
        None,
        static_scales=list(scales) if scales is not None else None,
    )
