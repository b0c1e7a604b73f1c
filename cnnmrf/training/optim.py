"""What a run optimises and how: the stage's loss, the optimiser and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cnnmrf.losses import peak_normalised
from cnnmrf.models.pose import PoseModel
from cnnmrf.training.config import Loss, Optimizer, Schedule, Stage, TrainConfig


def build_optimizer(config: TrainConfig, model: PoseModel) -> torch.optim.Optimizer:
    """Adam or SGD: weight decay on the detector's convolution weights only; the spatial model at ``spatial_lr``."""
    decay = [m.weight for m in model.detector.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad]
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.detector.parameters() if p.requires_grad and id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if model.spatial is not None:
        groups.append({"params": list(model.spatial.parameters()), "weight_decay": 0.0, "lr": config.spatial_lr})
    groups = [g for g in groups if g["params"]]
    if config.optimizer is Optimizer.sgd:
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.momentum, 0.999))


def steps_per_epoch(config: TrainConfig, samples: int) -> int:
    """Optimiser steps in an epoch of ``samples`` examples (at least one; at most ``max_steps_per_epoch`` if set)."""
    steps = samples // config.batch_size if samples >= config.batch_size else 1
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step (for ``LambdaLR``): linear warmup, then cosine decay to 1% (or constant)."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule is Schedule.constant:
            return 1.0
        progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def stage_loss(
    config: TrainConfig,
    loss_fn: Callable[..., torch.Tensor],
    out: dict[str, torch.Tensor],
    target: torch.Tensor,
    visible: torch.Tensor,
) -> torch.Tensor:
    """The loss of the stage being trained: detector maps, spatial-model maps, or both."""

    def on(maps: torch.Tensor, log_space: bool) -> torch.Tensor:
        maps = maps.float()
        if config.loss is Loss.mse and log_space:
            maps = peak_normalised(maps)
        return loss_fn(maps, target, visible)

    if config.stage is Stage.detector:
        return on(out["detector"], log_space=False)
    spatial = on(out["spatial"], log_space=True)
    if config.stage is Stage.mrf:
        return spatial
    return spatial + config.detector_loss_weight * on(out["detector"], log_space=False)
