"""Optimizers and learning-rate schedules, each a registry filled by a decorator.

An optimizer factory is ``(params, config) -> torch.optim.Optimizer``; a schedule factory
is ``(optimizer, config, total_steps) -> scheduler`` stepped once per batch. Adding one is
one decorated function here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from n2nonnx.registry import name_registry

if TYPE_CHECKING:
    from n2nonnx.training.config import TrainConfig

OptimizerFactory = Callable[[list[torch.nn.Parameter], "TrainConfig"], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, "TrainConfig", int], Any]

OPTIMIZERS: dict[str, OptimizerFactory] = {}
SCHEDULES: dict[str, ScheduleFactory] = {}

register_optimizer = name_registry(OPTIMIZERS, "optimizer")
register_schedule = name_registry(SCHEDULES, "schedule")


@register_optimizer("sgd")
def _sgd(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@register_optimizer("adam")
def _adam(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@register_optimizer("adamw")
def _adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@register_schedule("none")
def _constant(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    return None


@register_schedule("cosine")
def _cosine(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


@register_schedule("step")
def _step(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    steps_per_epoch = max(1, total_steps // config.epochs)
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.step_size * steps_per_epoch, gamma=config.gamma
    )


@register_schedule("onecycle")
def _onecycle(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    cycle_momentum = config.optimizer != "sgd" or config.momentum > 0
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, cycle_momentum=cycle_momentum
    )
