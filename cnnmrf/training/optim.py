"""What a run optimises and how: the stage's loss, the optimiser and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from cnnmrf.errors import CnnmrfError
from cnnmrf.losses import peak_normalised
from cnnmrf.models.pose import PoseModel
from cnnmrf.training.config import Loss, Optimizer, Stage, TrainConfig


def decay_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups of ``module``'s trainable parameters: weight decay on convolution weights only."""
    decay = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad]
    decay_ids = {id(p) for p in decay}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in decay_ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(config: TrainConfig, model: PoseModel) -> torch.optim.Optimizer:
    """Adam or SGD: weight decay on the detector's convolution weights only; the spatial model at ``spatial_lr``."""
    groups = decay_groups(model.detector, config.weight_decay)
    if model.spatial is not None:
        groups.append({"params": list(model.spatial.parameters()), "weight_decay": 0.0, "lr": config.spatial_lr})
    groups = [g for g in groups if g["params"]]
    if config.optimizer is Optimizer.sgd:
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.momentum, 0.999))


def steps_per_epoch(samples: int, batch_size: int, max_steps: int = 0) -> int:
    """Optimiser steps in an epoch of ``samples`` examples (at least one; at most ``max_steps`` if set)."""
    steps = samples // batch_size if samples >= batch_size else 1
    return min(steps, max_steps) if max_steps else steps


def lr_lambda(warmup_steps: int, total_steps: int, constant: bool = False) -> Callable[[int], float]:
    """The learning-rate factor per step (for ``LambdaLR``): linear warmup, then cosine decay to 1% (or constant)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if constant:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def check_loss(loss: torch.Tensor, epoch: int, step: int, out: Path) -> None:
    """Stop a run whose loss is not finite, saying whether a good checkpoint (``out/last.pt``) is kept.

    Raises:
        CnnmrfError: ``loss`` is NaN or infinite (``epoch`` and ``step`` counted from 0).
    """
    if not torch.isfinite(loss):
        last = out / "last.pt"
        kept = f"the last good checkpoint is kept: {last}" if last.is_file() else "no checkpoint was written"
        raise CnnmrfError(
            f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped. {kept}; try a lower --lr"
        )


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[torch.Tensor],
    grad_clip: float,
) -> None:
    """One step: gradients of ``loss``, clipped to norm ``grad_clip`` (0: not clipped), the update, the schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()


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
