"""SynFlow (Tanaka et al. 2020): data-free, iterative synaptic-flow pruning.

Every parameter is replaced by its absolute value, an all-ones input (batch 1) is fed,
``R = sum(output)`` and the score is ``|w * dR/dw|``. Over ``iterations`` rounds the
density follows ``density ** (k / iterations)``, pruning by the allocation each round.
The computation runs in float64 (products of many |w| overflow float32 on deep nets)
with BatchNorm in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch

from n2nonnx.prune.registry import ScoringContext, criterion


def synflow_round(module, names: list[str], masks: dict[str, torch.Tensor], input_shape) -> dict[str, np.ndarray]:
    """One SynFlow scoring pass on ``module`` (already holding |w|) under ``masks``."""
    weights = [module.tensor(name) for name in names]
    with torch.no_grad():
        originals = [w.detach().clone() for w in weights]
        for weight, name in zip(weights, names, strict=True):
            weight.mul_(masks[name])
    ones = torch.ones(input_shape, dtype=torch.float64)
    output = module(ones)
    output = output[0] if isinstance(output, tuple) else output
    grads = torch.autograd.grad(output.sum(), weights)
    scores = {
        name: (w * g).abs().detach().numpy()
        for name, w, g in zip(names, weights, grads, strict=True)
    }
    with torch.no_grad():
        for weight, original in zip(weights, originals, strict=True):
            weight.copy_(original)
    return scores


def absolute_module(context: ScoringContext):
    """An OnnxModule in float64, eval mode, with every floating initializer made |x|."""
    from n2nonnx.backend import OnnxModule

    module = OnnxModule(context.model, dtype=torch.float64)
    module.eval()
    with torch.no_grad():
        for name in module.initializer_names:
            tensor = module.tensor(name)
            if tensor.is_floating_point():
                tensor.abs_()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for name in context.weights:
        module.tensor(name).requires_grad_(True)
    return module


@criterion("synflow", needs_data=False, summary="iterative synaptic flow |w * dR/dw|, data-free")
def synflow_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    iterations = int(context.options.get("iterations", 100))
    module = absolute_module(context)
    input_shape = [1, *context.options["sample_shape"]]
    masks = {name: torch.ones_like(module.tensor(name)) for name in context.weights}
    scores: dict[str, np.ndarray] = {}
    for round_index in range(1, iterations + 1):
        scores = synflow_round(module, context.weights, masks, input_shape)
        if context.allocate is None:
            break
        density = context.density ** (round_index / iterations)
        masked_scores = {n: np.where(masks[n].numpy() > 0, s, -np.inf) for n, s in scores.items()}
        new_masks = context.allocate(masked_scores, density)
        masks = {n: torch.from_numpy(m.astype(np.float64)) for n, m in new_masks.items()}
    # Final scores: survivors rank above everything pruned in earlier rounds.
    return {n: np.where(masks[n].numpy() > 0, scores[n], -np.inf) for n in context.weights}
