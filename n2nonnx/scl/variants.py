"""SCL as a study variant: ``SCL`` on the dense model, ``N2NSkip-SCL`` on dense + skip layers.

:func:`n2nskip_candidates` gives SCL an N2NSkip architecture to learn in: the skip layers
that :func:`n2nonnx.add_n2nskip` builds (same pairs, sampling and seed as the N2NSkip
variants), every sequential weight back at its dense value and every skip position holding
a weight, so that SCL, not the sampling, decides which connections and how much of the
budget go to skips. :func:`scl_cell` runs one cell with the study's epoch count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.scl.learn import learn_masks
from n2nonnx.scl.result import SclResult


def n2nskip_candidates(
    dense: Model, *, density: float, skip_share: float = 0.5, seed: int = 0, **skip_options: Any
) -> Model:
    """A dense model with N2NSkip layers, every connection present, for SCL to prune.

    The skip layers are those of ``add_n2nskip(dense, density=..., skip_share=...)``; the
    positions its sampling left empty get weights drawn from a normal distribution with the
    root mean square of the sampled ones (the layer's Kaiming scale), seeded.

    Args:
        dense: the dense model.
        density: the budget ``add_n2nskip`` sizes the skip layers for.
        skip_share: the skip part of that budget (decides the skip layers' widths).
        seed: seed of the sampling and of the filled-in weights.
        skip_options: further :func:`n2nonnx.add_n2nskip` options (``sampling``, ``pairs`` ...).

    Returns:
        The model; its masks are all ones (any existing mask is kept in the graph but
        :func:`learn_masks` replaces it).
    """
    from n2nonnx.skip import add_n2nskip

    skipped = add_n2nskip(dense, density=density, skip_share=skip_share, seed=seed, **skip_options)
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for layer in skipped.layers:
        if not layer.is_skip:
            values[layer.weight] = dense.initializer(layer.weight)
            continue
        weight = np.array(skipped.initializer(layer.weight))
        sampled = weight[weight != 0]
        scale = (
            float(np.sqrt(np.mean(np.square(sampled))))
            if sampled.size
            else np.sqrt(2.0 / layer.fan_in)
        )
        empty = weight == 0
        weight[empty] = (rng.standard_normal(int(empty.sum())) * scale).astype(weight.dtype)
        values[layer.weight] = weight
    from n2nonnx.masks import apply_masks

    filled = skipped.with_initializers(values)
    return apply_masks(
        filled, {w: np.ones(v.shape, np.float32) for w, v in values.items()}, zero_weights=False
    )


def scl_cell(
    dense: Model,
    data: Any,
    *,
    density: float,
    skip_share: float = 0.0,
    recipe: dict[str, Any],
    seed: int = 0,
    sampling: str = "block",
    skip_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> SclResult:
    """One study cell: ``SCL`` (``skip_share=0``) or ``N2NSkip-SCL`` at ``density``.

    The total number of epochs is the recipe's, as for every other variant (half search,
    half fine-tuning).

    Args:
        dense: the dense model.
        data: the data set.
        density: the target density (sequential + skip non-zeros over the dense sequential weights).
        skip_share: 0 for SCL; > 0 builds the N2NSkip layers of that share first.
        recipe: the study's training settings (``epochs``, ``optimizer``, ``lr`` ...); a
            ``seed`` in it (the main job's recipe carries one) must equal ``seed``.
        seed: seed of the skip layers, shuffling and every RNG.
        sampling: N2NSkip sampling mode of the skip layers.
        skip_options: further :func:`n2nonnx.add_n2nskip` options.
        progress: show progress bars.

    Returns:
        The :class:`SclResult`; ``.model`` is trained and ready for onnxruntime.
    """
    recipe = dict(recipe)
    given = recipe.pop("seed", seed)
    if given != seed:
        raise InvalidArgumentError(
            f"scl_cell got seed={seed} and a recipe with seed={given}; give one seed"
        )
    model = dense
    if skip_share > 0:
        model = n2nskip_candidates(
            dense,
            density=density,
            skip_share=skip_share,
            seed=seed,
            sampling=sampling,
            **dict(skip_options or {}),
        )
    return learn_masks(model, data, density=density, seed=seed, progress=progress, **recipe)
