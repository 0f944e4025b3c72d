"""SCL, automatic Sparse Connectivity Learning: masks learned during training.

    result = n2nonnx.scl.learn_masks(model, "mnist1d", density=0.05, epochs=15)
    result.model          # an ordinary masked, trained model (a ``prune`` record, method scl)

Each prunable weight is ``w = theta * step(m)``, ``m`` a trainable real-valued mask
variable of the weight's shape (on the PyTorch side; the ONNX graph keeps its usual mask
initializer and Mul). The choices the method's abstract leaves open, made here:

- Identity straight-through estimator: ``d step(m)/dm := 1`` (:mod:`~n2nonnx.scl.ste`).
- Initial ``m``: a small positive constant (``MASK_INIT``), so every connection starts on.
- Mask gradients normalised per output unit: each unit's vector is divided by its RMS.
- Regulariser ``lambda * sum step(m)``; through the STE its gradient is ``lambda`` for every
  ``m``, added after the normalisation (so one lambda acts on every unit and layer alike).
- ``m`` trains by plain SGD (``MASK_LR``); theta by the recipe's optimizer, whose weight
  decay acts on theta only.
- Target mode steers lambda to a cubic density schedule (:mod:`~n2nonnx.scl.controller`),
  then freezes the ``k`` largest ``m``; free mode keeps ``m > 0`` at a fixed lambda.
- N2NSkip weights are learned by the same rule, so SCL sets the sequential / skip split.

:func:`learn_masks` is in :mod:`~n2nonnx.scl.learn`, its options (:class:`SclOptions`,
validated once) in :mod:`~n2nonnx.scl.options`; names are imported on first use, so reading
the options (the command line's ``--help``) imports no numpy.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__all__ = [
    "MASK_INIT",
    "MASK_LR",
    "TOLERANCE",
    "LearnedLayer",
    "SclOptions",
    "SclResult",
    "learn_masks",
    "learn_masks_with",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MASK_INIT": "n2nonnx.scl.options",
        "MASK_LR": "n2nonnx.scl.options",
        "SclOptions": "n2nonnx.scl.options",
        "TOLERANCE": "n2nonnx.scl.learn",
        "learn_masks": "n2nonnx.scl.learn",
        "learn_masks_with": "n2nonnx.scl.learn",
        "LearnedLayer": "n2nonnx.scl.result",
        "SclResult": "n2nonnx.scl.result",
    },
)
