"""SynFlow in float32 with exact power-of-two rescaling: same masks as float64, no overflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_prune import hand_grasp, small_cnn, small_mlp, toy_data, weights_of
from torch import nn

import n2nonnx
from converters.pytorch import export
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.pruning import prune
from n2nonnx.pruning.criteria import ScoringContext, get_criterion
from n2nonnx.pruning.criteria.synflow import _Rescaler, absolute_module

ZOO = ["mlp", "vgg", "resnet", "densenet", "mobilenet", "transformer"]


def loaded(net: nn.Module, shape) -> n2nonnx.Model:
    return n2nonnx.load(export(net, torch.randn(2, *shape)).proto)


def deep_residual(gain: float) -> nn.Module:
    """Ten residual blocks with biases and BatchNorm; ``gain`` inflates every conv."""
    torch.manual_seed(1)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(4, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Conv2d(4, 4, 3, padding=1),
                nn.BatchNorm2d(4),
            )

        def forward(self, x):
            return torch.relu(x + self.body(x))

    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        *[Block() for _ in range(10)],
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(gain)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def synflow_masks(model, density, allocation, precision, iterations=20):
    pruned = prune(
        model,
        "synflow",
        density,
        allocation=allocation,
        options={"iterations": iterations, "precision": precision},
    )
    return {layer.weight: pruned.mask(layer.weight) for layer in pruned.layers}


@pytest.fixture(scope="module")
def test_models(zoo_models):
    models = {
        "small_mlp": loaded(small_mlp(), (20,)),
        "small_cnn": loaded(small_cnn(), (2, 8, 8)),
        "deep_residual": loaded(deep_residual(1.0), (2, 6, 6)),
    }
    models.update({name: n2nonnx.load(zoo_models[name]) for name in ZOO})
    return models


@pytest.mark.parametrize("name", ["small_mlp", "small_cnn", "deep_residual", *ZOO])
@pytest.mark.parametrize(
    ("density", "allocation"), [(0.05, "global"), (0.2, "uniform"), (0.1, "erk")]
)
def test_float32_masks_equal_float64(name, density, allocation, test_models):
    model = test_models[name]
    ours = synflow_masks(model, density, allocation, "float32")
    reference = synflow_masks(model, density, allocation, "float64")
    for weight in reference:
        np.testing.assert_array_equal(ours[weight], reference[weight], err_msg=f"{name} {weight}")


def context(model, shape, precision, density=0.2, iterations=4) -> ScoringContext:
    from n2nonnx.pruning.allocation import masks_from_scores

    return ScoringContext(
        model=model,
        weights=weights_of(model),
        density=density,
        rng=np.random.default_rng(0),
        options={"iterations": iterations, "sample_shape": shape, "precision": precision},
        allocate=lambda scores, target: masks_from_scores(scores, target, None),
    )


def test_rescaling_is_exact_and_needed_where_float32_overflows():
    shape = (2, 6, 6)
    model = loaded(deep_residual(100.0), shape)
    # unscaled, the positive network leaves float32's range
    plain = absolute_module(context(model, shape, "float32"), torch.float32)
    assert not torch.isfinite(plain(torch.ones(1, *shape))).all()
    ours = get_criterion("synflow").score(context(model, shape, "float32"))
    reference = get_criterion("synflow").score(context(model, shape, "float64"))
    for weight in reference:
        np.testing.assert_array_equal(np.isinf(ours[weight]), np.isinf(reference[weight]))
        finite = np.isfinite(reference[weight])
        np.testing.assert_allclose(ours[weight][finite], reference[weight][finite], rtol=2e-5)
    assert max(np.abs(s[np.isfinite(s)]).max() for s in reference.values()) > 1e38  # beyond float32


@pytest.mark.parametrize("name", ["small_cnn", "deep_residual", *ZOO])
def test_scaled_network_is_the_unscaled_one_times_a_power_of_two(name, test_models):
    """In float64 the rescaled module's output is exactly 2**E times the plain one."""
    model = test_models[name]
    shape = tuple(model.graph_inputs[0].shape[1:])
    plain = absolute_module(context(model, shape, "float64"), torch.float64)
    scaled = absolute_module(context(model, shape, "float64"), torch.float64)
    rescaler = _Rescaler(scaled, model.proto.graph, weights_of(model))
    rescaler.rescale()
    assert any(e != 0 for e in rescaler.current.values()) or name == "transformer"
    ones = torch.ones(1, *shape, dtype=torch.float64)
    expected = plain(ones).detach() * 2.0**rescaler.output_exponent
    np.testing.assert_allclose(scaled(ones).detach().numpy(), expected.numpy(), rtol=1e-12)


def test_exact_ties_are_broken_alike():
    """Weights on a coarse grid give many equal scores; both precisions break ties by position."""
    net = small_mlp()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.round(parameter * 8) / 8)
    model = loaded(net, (20,))
    for allocation in ("global", "uniform"):
        ours = synflow_masks(model, 0.1, allocation, "float32", iterations=10)
        reference = synflow_masks(model, 0.1, allocation, "float64", iterations=10)
        for weight in reference:
            np.testing.assert_array_equal(ours[weight], reference[weight])


def test_bad_precision_is_refused(test_models):
    with pytest.raises(InvalidArgumentError, match="precision"):
        prune(test_models["small_mlp"], "synflow", 0.1, options={"precision": "float16"})


def test_progress_changes_nothing(test_models):
    model = test_models["small_cnn"]
    data = toy_data((2, 8, 8))
    for method in ("snip", "grasp", "synflow"):
        quiet = prune(model, method, 0.1, data=data, options={"iterations": 3})
        shown = prune(model, method, 0.1, data=data, options={"iterations": 3}, progress=True)
        for layer in model.layers:
            np.testing.assert_array_equal(quiet.mask(layer.weight), shown.mask(layer.weight))


def test_grasp_in_chunks_matches_one_batch():
    """100 samples (4 chunks of at most 32) give the Hessian-gradient product of one batch."""
    net = small_cnn()
    model = loaded(net, (2, 8, 8))
    data = toy_data((2, 8, 8), count=100)  # 20 per class: 10 of each are GraSP's sample
    ours = get_criterion("grasp").score(context_with_data(model, data))
    rng = np.random.default_rng(0)
    y = data.y_train.numpy()
    chosen = sorted(
        i for label in np.unique(y) for i in rng.permutation(np.flatnonzero(y == label))[:10]
    )
    expected = hand_grasp(net.eval(), data.x_train[chosen], data.y_train[chosen])
    for name in weights_of(model):
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-5, atol=1e-5 * scale)


def context_with_data(model, data) -> ScoringContext:
    return ScoringContext(
        model=model,
        weights=weights_of(model),
        density=0.1,
        rng=np.random.default_rng(0),
        data=data,
        batch_size=128,
    )
