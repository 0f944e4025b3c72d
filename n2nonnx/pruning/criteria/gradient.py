"""Data-driven criteria computed through the PyTorch backend on the ONNX graph itself.

* SNIP / CSP (Lee et al. 2019): ``s = |w * dL/dw|`` on one mini-batch, normalised by
  the sum over all scored weights.
* GraSP (Wang et al. 2020): ``S = -w * (H g)``, the Hessian-gradient product by double
  backprop with logits divided by a temperature (default 200), on about 10 samples per
  class. GraSP removes the *largest* S, so the kept score is ``-S = w * Hg``.

Both apply cross-entropy to logits: a model ending in Softmax (Keras, skl2onnx) gives
probabilities, whose log is used instead (:func:`n2nonnx.graph.outputs.output_kind`, the
rule training follows); log-probabilities are used as they are.

SNIP makes one pass over its batch (the batch is the criterion's setting). GraSP runs its
sample in chunks of at most :data:`CHUNK` (the loss is a mean over the samples, so the
gradient and the Hessian-gradient product add up chunk by chunk): memory stays that of
one chunk however many classes the data has; ``progress`` shows a bar over the chunks.
"""

from __future__ import annotations

import numpy as np
import torch

from n2nonnx.graph.outputs import output_kind
from n2nonnx.pruning.registry import ScoringContext, criterion

CHUNK = 32  # samples per forward / backward pass


def _module(context: ScoringContext):
    from n2nonnx.backend import OnnxModule

    module = OnnxModule(context.model)
    module.eval()  # scoring at initialization: BatchNorm uses its running statistics
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    weights = [module.tensor(name) for name in context.weights]
    for weight in weights:
        weight.requires_grad_(True)
    return module, weights


def _logits(module, x: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """Logits of ``x``: the output itself, or the log of probabilities (a final Softmax).

    ``log p`` differs from the logits by a per-sample constant, so cross-entropy of it (also
    divided by GraSP's temperature) is that of the logits: the loss training uses.
    """
    output = module(x)
    output = output[0] if isinstance(output, tuple) else output
    if kind == "probabilities":
        return torch.log(output.clamp_min(1e-12))
    return output


def _batch(context: ScoringContext, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = context.data.x_train, context.data.y_train
    order = torch.from_numpy(context.rng.permutation(len(x))[: min(size, len(x))])
    return x[order], y[order]


def _chunks(
    context: ScoringContext, x: torch.Tensor, y: torch.Tensor, what: str, chunk: int = CHUNK
):
    """(x, y, share) per chunk of at most ``chunk`` samples; ``share`` = its part of the mean."""
    from tqdm.auto import tqdm

    starts = range(0, len(x), chunk)
    for start in tqdm(
        starts,
        desc=what,
        unit="chunk",
        disable=None if context.progress and len(starts) > 1 else True,
    ):
        stop = min(start + chunk, len(x))
        yield x[start:stop], y[start:stop], (stop - start) / len(x)


def _mean_loss_grad(
    module, weights, context, x, y, scale: float, what: str, chunk: int = CHUNK
) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy of ``logits / scale`` over (x, y), chunk by chunk."""
    kind = output_kind(context.model.proto)
    total = [torch.zeros_like(w) for w in weights]
    for xs, ys, share in _chunks(context, x, y, what, chunk):
        loss = torch.nn.functional.cross_entropy(_logits(module, xs, kind) / scale, ys) * share
        for accumulated, grad in zip(total, torch.autograd.grad(loss, weights), strict=True):
            accumulated += grad
    return total


@criterion(
    "snip", needs_data=True, summary="connection sensitivity |w * dL/dw| on one mini-batch (CSP)"
)
def snip_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Score each weight by its connection sensitivity on one mini-batch (SNIP / CSP).

    Args:
        context: the scoring context; needs ``data``; one batch of ``batch_size``
            training samples is drawn with ``rng``.

    Returns:
        Weight name -> ``|w * dL/dw|`` normalised to sum to 1 over all scored weights.
    """
    module, weights = _module(context)
    x, y = _batch(context, context.batch_size)
    loss = torch.nn.functional.cross_entropy(
        _logits(module, x, output_kind(context.model.proto)), y
    )
    grads = torch.autograd.grad(loss, weights)
    scores = [(w * g).abs().detach().double() for w, g in zip(weights, grads, strict=True)]
    total = sum(float(s.sum()) for s in scores) or 1.0
    return {name: (s / total).numpy() for name, s in zip(context.weights, scores, strict=True)}


def grasp_samples(context: ScoringContext) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``samples_per_class`` training samples of every class (seeded)."""
    per_class = int(context.options.get("samples_per_class", 10))
    y = context.data.y_train.numpy()
    chosen = []
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        chosen.extend(context.rng.permutation(where)[:per_class].tolist())
    index = torch.as_tensor(sorted(chosen))
    return context.data.x_train[index], context.data.y_train[index]


@criterion(
    "grasp", needs_data=True, summary="gradient signal preservation: keep the smallest -w * Hg"
)
def grasp_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Score each weight by gradient signal preservation (GraSP): ``w * Hg``.

    ``g`` is the gradient of the temperature-scaled loss on :func:`grasp_samples` and ``H``
    its Hessian; keeping the highest ``w * Hg`` removes the largest ``-w * Hg``, as GraSP
    prescribes.

    Args:
        context: the scoring context; needs ``data``; options ``temperature`` (default
            200) and ``samples_per_class`` (default 10).

    Returns:
        Weight name -> ``w * Hg`` in float64.
    """
    temperature = float(context.options.get("temperature", 200.0))
    module, weights = _module(context)
    x, y = grasp_samples(context)
    gradient = [
        g.detach() for g in _mean_loss_grad(module, weights, context, x, y, temperature, "grasp g")
    ]
    hessian_gradient = [torch.zeros_like(w) for w in weights]
    kind = output_kind(context.model.proto)
    for xs, ys, share in _chunks(context, x, y, "grasp Hg"):
        loss = (
            torch.nn.functional.cross_entropy(_logits(module, xs, kind) / temperature, ys) * share
        )
        first = torch.autograd.grad(loss, weights, create_graph=True)
        dot = sum((g1 * g0).sum() for g1, g0 in zip(first, gradient, strict=True))
        for accumulated, grad in zip(
            hessian_gradient, torch.autograd.grad(dot, weights), strict=True
        ):
            accumulated += grad
    return {
        name: (w * hg).detach().double().numpy()
        for name, w, hg in zip(context.weights, weights, hessian_gradient, strict=True)
    }
