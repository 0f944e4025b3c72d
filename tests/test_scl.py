"""SCL's pieces and a hand-written PyTorch SCL that the ONNX path must match mask for mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import n2nonnx
from converters.pytorch import export
from n2nonnx import zoo
from n2nonnx.backend import OnnxModule
from n2nonnx.data import resolve_data
from n2nonnx.masks import mask_arrays
from n2nonnx.runtime import run
from n2nonnx.scl import learn_masks
from n2nonnx.scl.controller import TargetDensity
from n2nonnx.scl.ste import connection_penalty, normalise_per_unit, step_ste

torch.set_num_threads(1)
DATA = "synthetic:features=12,classes=3,train=300,test=100"
HIDDEN = (24, 16)
RECIPE = {
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 3e-3,
    "schedule": "cosine",
    "weight_decay": 1e-4,
}
MASK_INIT, MASK_LR = 0.05, 0.01


# ----------------------------------------------------------------------------- the pieces


def test_step_is_exact_and_its_gradient_is_the_identity():
    m = torch.tensor([-0.5, 0.0, 1e-8, 2.0], requires_grad=True)
    gate = step_ste(m)
    assert gate.tolist() == [0.0, 0.0, 1.0, 1.0]
    (gate * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert m.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # off connections get gradient too


def test_penalty_gradient_through_the_ste_is_one_everywhere():
    values = [
        torch.tensor([[0.3, -0.2]], requires_grad=True),
        torch.tensor([-1.0, 4.0, 0.1], requires_grad=True),
    ]
    penalty = connection_penalty(values)
    assert float(penalty.detach()) == 3.0
    (0.5 * penalty).backward()
    assert values[0].grad.tolist() == [[0.5, 0.5]] and values[1].grad.tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("unit_axis", [0, 1])
def test_normalisation_gives_each_unit_rms_one_and_keeps_dead_units_zero(unit_axis):
    grad = torch.randn(5, 7, 3, dtype=torch.float64) * torch.logspace(
        -6, 3, 5 if unit_axis == 0 else 7, dtype=torch.float64
    ).reshape((-1, 1, 1) if unit_axis == 0 else (1, -1, 1))
    grad.select(unit_axis, 2).zero_()
    normalised = normalise_per_unit(grad, unit_axis)
    rms = (
        normalised.movedim(unit_axis, 0)
        .reshape(normalised.shape[unit_axis], -1)
        .square()
        .mean(1)
        .sqrt()
    )
    expected = torch.ones_like(rms)
    expected[2] = 0.0
    torch.testing.assert_close(rms, expected)
    # the direction within a unit is unchanged
    unit = 1
    ratio = normalised.select(unit_axis, unit) / grad.select(unit_axis, unit)
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_schedule_waits_then_declines_to_the_target_and_holds():
    controller = TargetDensity(start=1000, target=50, steps=100)
    wanted = [controller.wanted(step) for step in range(100)]
    assert wanted[:9] == [1000] * 9  # warm-up: lambda 0
    assert all(a >= b for a, b in zip(wanted, wanted[1:], strict=False))
    assert wanted[74:] == [50] * 26  # reached at 3/4 of the search, then held


def test_controller_leaves_exactly_the_wanted_count_on():
    torch.manual_seed(0)
    controller = TargetDensity(start=300, target=30, steps=10, warmup=0.0, reach=0.5)
    proposals = [torch.randn(10, 20), torch.randn(100)]
    for step in range(10):
        shift = controller.shift(step, proposals, mask_lr=0.1)
        assert shift >= 0
        kept = sum(int((p - shift > 0).sum()) for p in proposals)
        assert kept == min(controller.wanted(step), sum(int((p > 0).sum()) for p in proposals))


# ----------------------------------------------------------------------------- the reference


def _reference_scl(
    net: torch.nn.Sequential,
    data,
    *,
    epochs: int,
    seed: int,
    density: float | None,
    scl_lambda: float | None,
) -> list[np.ndarray]:
    """SCL written out by hand on a PyTorch MLP (nn.Linear layers), independent of n2nonnx.scl."""
    linears = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    masks = [torch.full_like(layer.weight, MASK_INIT) for layer in linears]
    theta = [p for layer in linears for p in (layer.weight, layer.bias)]
    optimizer = torch.optim.Adam(theta, lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    batch = RECIPE["batch_size"]
    samples = len(data.x_train)
    per_epoch = samples // batch + (1 if samples % batch > 1 else 0)
    total_steps = per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    candidates = sum(m.numel() for m in masks)
    target = None if density is None else round(density * candidates)
    shuffler = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(samples, generator=shuffler)
        for start in range(0, per_epoch * batch, batch):
            index = order[start : start + batch]
            for m in masks:
                m.requires_grad_(True)
                m.grad = None
            h = data.x_train[index]
            for position, (layer, m) in enumerate(zip(linears, masks, strict=True)):
                gate = (m > 0).to(m.dtype).detach() + (m - m.detach())  # identity straight-through
                h = F.linear(h, layer.weight * gate, layer.bias)
                if position < len(linears) - 1:
                    h = torch.relu(h)
            loss = F.cross_entropy(h, data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                proposals = []
                for m in masks:
                    rms = (
                        m.grad.square()
                        .mean(dim=1, keepdim=True)
                        .sqrt()
                        .clamp_min(torch.finfo(m.dtype).tiny)
                    )
                    proposals.append(m.detach() - MASK_LR * (m.grad / rms))
                if target is None:
                    shift = MASK_LR * scl_lambda
                else:
                    progress = min(
                        max((step + 1 - 0.1 * total_steps) / (0.65 * total_steps), 0.0), 1.0
                    )
                    keep = int(round(target + (candidates - target) * (1 - progress) ** 3))
                    flat = torch.cat([p.flatten() for p in proposals])
                    shift = (
                        max(float(flat.sort(descending=True).values[keep]), 0.0)
                        if keep < flat.numel()
                        else 0.0
                    )
                masks = [(p - shift).detach() for p in proposals]
            scheduler.step()
            step += 1
    if target is None:
        return [(m > 0).numpy().astype(np.float32) for m in masks]
    flat = torch.cat([m.flatten() for m in masks])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.sort(flat, descending=True, stable=True).indices[:target]] = True
    return [
        part.reshape(m.shape).numpy().astype(np.float32)
        for part, m in zip(chosen.split([m.numel() for m in masks]), masks, strict=True)
    ]


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(3)
    net = zoo.build("mlp", in_features=12, hidden=HIDDEN, classes=3)
    model = n2nonnx.load(export(net, torch.randn(2, 12)).proto)
    return net, model, resolve_data(DATA, input_shape=model.graph_inputs[0].shape)


@pytest.mark.parametrize(("density", "scl_lambda"), [(0.2, None), (None, 0.5)])
def test_onnx_path_learns_the_same_masks_as_a_hand_written_scl(mlp, density, scl_lambda):
    net, model, data = mlp
    reference_net = zoo.build("mlp", in_features=12, hidden=HIDDEN, classes=3)
    reference_net.load_state_dict(net.state_dict())
    expected = _reference_scl(
        reference_net, data, epochs=3, seed=5, density=density, scl_lambda=scl_lambda
    )
    result = learn_masks(
        model,
        data,
        density=density,
        scl_lambda=scl_lambda,
        epochs=3,
        search_fraction=1.0,
        seed=5,
        mask_init=MASK_INIT,
        mask_lr=MASK_LR,
        **RECIPE,
    )
    learned = result.masks
    weights = [layer.weight for layer in model.layers]
    assert [learned[w].shape for w in weights] == [m.shape for m in expected]
    for weight, mask in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(learned[weight], mask)
    assert (
        0.02 < float(np.mean(np.concatenate([m.ravel() for m in expected]))) < 0.9
    )  # masks are non-trivial
    # theta at the end of the search agrees too (stored zeroed where pruned)
    linears = [layer for layer in reference_net if isinstance(layer, torch.nn.Linear)]
    for layer, linear, mask in zip(model.layers, linears, expected, strict=True):
        np.testing.assert_allclose(
            result.model.initializer(layer.weight),
            linear.weight.detach().numpy() * mask,
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            result.model.initializer(layer.bias), linear.bias.detach().numpy(), rtol=1e-5, atol=1e-6
        )


def test_masks_hold_through_fine_tuning_and_onnxruntime_agrees(mlp):
    _, model, data = mlp
    searched = learn_masks(
        model, data, density=0.2, epochs=2, search_fraction=1.0, seed=1, **RECIPE
    )
    tuned = learn_masks(model, data, density=0.2, epochs=4, search_fraction=0.5, seed=1, **RECIPE)
    assert len(tuned.history) == 4 and [r.epoch for r in tuned.history] == [1, 2, 3, 4]
    before, after = searched.masks, mask_arrays(tuned.model)
    assert set(before) <= set(after)
    for weight, mask in before.items():
        np.testing.assert_array_equal(after[weight], mask)
        stored = tuned.model.initializer(weight)
        assert not np.any(stored[mask == 0])  # pruned weights are exactly zero
        assert not np.allclose(
            stored, searched.model.initializer(weight)
        )  # and the kept ones trained on
    assert tuned.density == pytest.approx(
        round(0.2 * sum(m.size for m in before.values())) / sum(m.size for m in before.values()),
        abs=0,
    )
    x = data.x_test.numpy()[:64]
    expected = run(tuned.model, {"x": x})[0]
    module = OnnxModule(tuned.model).eval()
    with torch.no_grad():
        actual = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    stages = [s["stage"] for s in n2nonnx.metadata.stages(tuned.model.proto)]
    assert stages[-2:] == ["prune", "train"]
    assert math.isclose(
        n2nonnx.metadata.stages(tuned.model.proto, "prune")[-1]["achieved_density"], tuned.density
    )


def test_norm_normalisation_gives_each_unit_norm_one():
    grad = (
        torch.randn(4, 9, dtype=torch.float64)
        * torch.tensor([1e-4, 1.0, 1e2, 3.0], dtype=torch.float64)[:, None]
    )
    normalised = normalise_per_unit(grad, 0, by="norm")
    torch.testing.assert_close(normalised.norm(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(normalise_per_unit(grad, 0, by="rms"), normalised * 3.0)
