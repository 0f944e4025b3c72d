"""The per-step hook of train() and the options SCL's search trains through."""

from __future__ import annotations

import pytest
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx import zoo
from n2nonnx.data import resolve_data
from n2nonnx.training import StepInfo, TrainConfig, train

RECIPE = TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.1, schedule="cosine")


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = zoo.build("mlp", in_features=12, hidden=(16,), classes=3)
    model = n2nonnx.prune(n2nonnx.load(export(net, torch.randn(2, 12)).proto), "random", 0.5)
    data = resolve_data("synthetic:features=12,classes=3", input_shape=model.graph_inputs[0].shape)
    return model, data


def losses(result):
    return [(r.train_loss, r.test_loss, r.test_accuracy) for r in result.history]


def test_on_step_sees_every_step_in_order_and_changes_nothing(mlp):
    model, data = mlp
    seen: list[StepInfo] = []
    hooked = train(model, data, RECIPE, on_step=seen.append)
    plain = train(model, data, RECIPE)
    assert losses(hooked) == losses(plain)
    per_epoch = len(seen) // RECIPE.epochs
    assert per_epoch > 1 and len(seen) == per_epoch * RECIPE.epochs
    assert [info.step for info in seen] == list(range(len(seen)))
    assert [info.epoch for info in seen] == [1] * per_epoch + [2] * per_epoch
    assert all(info.module is hooked.module for info in seen)
    assert seen[0].lr == RECIPE.lr and seen[-1].lr < seen[0].lr  # the cosine schedule
    assert sum(info.samples for info in seen[:per_epoch]) >= len(data.x_train) - 1
    epoch_loss = sum(float(i.loss) * i.samples for i in seen[:per_epoch]) / sum(
        i.samples for i in seen[:per_epoch]
    )
    assert epoch_loss == pytest.approx(hooked.history[0].train_loss, rel=1e-6)


def test_wrap_module_runs_the_forward_passes_and_sample_order_the_batches(mlp):
    model, data = mlp
    calls = {"train": 0, "eval": 0}

    class Counting(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            calls["train" if self.training else "eval"] += 1
            return self.module(x)

    order = torch.arange(len(data.x_train))
    steps: list[StepInfo] = []
    result = train(
        model,
        data,
        RECIPE,
        wrap_module=Counting,
        sample_order=lambda epoch: order,
        on_step=steps.append,
        recalibrate_bn=False,
    )
    assert calls["train"] == len(steps) > 0
    assert all(info.module is result.module for info in steps)  # the OnnxModule, not the wrapper
    assert calls["eval"] >= len(result.history)
    assert losses(result) != losses(train(model, data, RECIPE, recalibrate_bn=False))
