"""Heatmap losses, vectorised over joints: the paper's MSE and spatial-softmax cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _masked_mean(per_map: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, K) per-map losses over maps where ``mask`` is True (all maps without a mask)."""
    if mask is None:
        return per_map.mean()
    weights = mask.to(per_map.dtype)
    return (per_map * weights).sum() / weights.sum().clamp_min(1.0)


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between heatmaps (the paper's loss).

    Args:
        pred: (B, K, H, W) predicted heatmaps.
        target: (B, K, H, W) target heatmaps.
        mask: (B, K) bool, which maps count (e.g. visible joints); None counts all.
    """
    per_map = (pred - target).square().mean(dim=(-2, -1))  # (B, K)
    return _masked_mean(per_map, mask)


def spatial_softmax_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy between the softmax over each map's pixels and the target normalised to sum 1.

    Args:
        logits: (B, K, H, W) unnormalised log-scores.
        target: (B, K, H, W) non-negative target heatmaps; all-zero maps contribute nothing.
        mask: (B, K) bool, which maps count; maps whose target sums to zero are always left out.
    """
    log_prob = F.log_softmax(logits.flatten(-2).float(), dim=-1)  # (B, K, H*W)
    flat = target.flatten(-2).float()  # (B, K, H*W)
    mass = flat.sum(dim=-1)  # (B, K)
    per_map = -(flat * log_prob).sum(dim=-1) / mass.clamp_min(1e-12)  # (B, K)
    valid = mass > 0 if mask is None else (mask & (mass > 0))
    return _masked_mean(per_map, valid)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": heatmap_mse, "ce": spatial_softmax_cross_entropy}


def peak_normalised(log_beliefs: torch.Tensor) -> torch.Tensor:
    """Map (B, K, H, W) log-beliefs to heatmaps in (0, 1] with each map's peak at 1 (for the MSE loss)."""
    return (log_beliefs - log_beliefs.amax(dim=(-2, -1), keepdim=True)).exp()
