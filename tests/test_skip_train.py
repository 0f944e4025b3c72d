"""N2NSkip models train in the PyTorch backend: skip weights learn, masks hold, write-back agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import n2nonnx
from n2nonnx import backend, masks
from n2nonnx import training as trainer
from n2nonnx.runtime import run
from n2nonnx.skip import add_n2nskip


def pruned(path, density: float = 0.3, seed: int = 0) -> n2nonnx.Model:
    model = n2nonnx.load(path)
    rng = np.random.default_rng(seed)
    return masks.apply_masks(
        model,
        {
            layer.weight: (rng.random(layer.weight_shape) < density).astype(np.float32)
            for layer in model.layers
        },
    )


def skip_weights(model: n2nonnx.Model) -> list[str]:
    return [layer.weight for layer in model.layers if layer.is_skip]


def test_trainer_trains_skip_weights_and_masks_hold(zoo_models):
    model = add_n2nskip(pruned(zoo_models["mlp"]), seed=0)
    result = trainer.train(
        model,
        "synthetic:features=40,classes=10,train=256,test=64",
        epochs=2,
        batch_size=64,
        lr=0.05,
        progress=False,
        seed=0,
    )
    trained = result.model
    for weight in skip_weights(model):
        before, after, mask = (
            model.initializer(weight),
            trained.initializer(weight),
            trained.mask(weight),
        )
        assert not np.array_equal(before, after)  # the skip weights learned
        assert np.all(after[mask == 0] == 0)  # and kept their sparsity
        np.testing.assert_array_equal(mask, model.mask(weight))
    x = np.random.default_rng(2).standard_normal((7, 40)).astype(np.float32)
    module = result.module.cpu().eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, run(trained, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_backend_step_on_conv_skips_matches_onnxruntime(zoo_models, name):
    model = add_n2nskip(pruned(zoo_models[name]), seed=1)
    module = backend.OnnxModule(model)
    for weight in skip_weights(model):
        assert module.is_trainable(weight) and not module.is_trainable(
            model.mask_sites[weight].mask
        )
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    module.train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        optimizer.zero_grad()
        module(x).logsumexp(dim=1).sum().backward()
        grads = [module.tensor(w).grad for w in skip_weights(model)]
        assert all(g is not None for g in grads) and any(torch.count_nonzero(g) > 0 for g in grads)
        optimizer.step()
        module.apply_masks_()
    written = n2nonnx.Model(module.write_back(model))
    for weight in skip_weights(model):
        assert not np.array_equal(written.initializer(weight), model.initializer(weight))
        assert np.all(written.initializer(weight)[written.mask(weight) == 0] == 0)
    module.eval()
    sample = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ours = module(torch.from_numpy(sample)).numpy()
    np.testing.assert_allclose(ours, run(written, sample)[0], rtol=1e-4, atol=1e-4)
