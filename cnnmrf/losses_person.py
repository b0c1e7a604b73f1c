"""The person detector's losses (CenterNet): focal loss on centre heatmaps, L1 on heights and offsets at centres."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centre_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed over cells and divided by the number of centres.

    Cells where the target is exactly 1 are centres: ``-(1 - p)^alpha log p``; every other cell is a negative,
    ``-w (1 - y)^beta p^alpha log(1 - p)``, its penalty reduced near centres by the Gaussian target ``y`` and
    weighted by ``w``.

    Args:
        logits: (B, 1, H, W) centre logits (p = sigmoid(logits)).
        target: (B, 1, H, W) Gaussian-splatted centres, 1 at each centre's cell.
        weight: (B, 1, H, W) weight of each cell's negative term (None: 1 everywhere).
        alpha: focusing exponent.
        beta: penalty reduction exponent.
    """
    logits, target = logits.float(), target.float()
    pos = target.eq(1.0)  # (B, 1, H, W)
    p = torch.sigmoid(logits)
    pos_term = (1 - p).pow(alpha) * F.logsigmoid(logits)  # log p
    neg_term = (1 - target).pow(beta) * p.pow(alpha) * F.logsigmoid(-logits)  # log(1 - p)
    if weight is not None:
        neg_term = neg_term * weight.float()
    total = torch.where(pos, pos_term, neg_term).sum()
    return -total / pos.sum().clamp_min(1)


def gather_cells(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of (B, C, H, W) maps at (B, M) flat cell indices (row * W + column) -> (B, M, C)."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)  # (B, C, H*W)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)  # (B, M, C)


def centre_l1(maps: torch.Tensor, index: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 error of maps at the centres, over the centres that ``mask`` marks.

    Args:
        maps: (B, C, H, W) predictions.
        index: (B, M) flat centre cells.
        target: (B, M, C) or (B, M) (when C = 1) values at the centres.
        mask: (B, M) bool, which slots hold a centre.
    """
    found = gather_cells(maps.float(), index)  # (B, M, C)
    target = target.float().reshape(found.shape)
    per_slot = (found - target).abs().sum(dim=-1)  # (B, M)
    weights = mask.to(per_slot.dtype)
    return (per_slot * weights).sum() / weights.sum().clamp_min(1.0)


def person_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], size_weight: float = 1.0, offset_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """The detector's training loss: focal + size_weight x L1(log height) + offset_weight x L1(offset).

    Args:
        out: the model's ``heat``, ``size``, ``offset`` maps (see :class:`cnnmrf.models.person.PersonDetector`).
        batch: ``heat``, ``weight``, ``index``, ``size``, ``offset``, ``mask`` as the person dataset gives them.

    Returns:
        The loss (float32 scalar) and its three parts as floats.
    """
    focal = centre_focal_loss(out["heat"], batch["heat"], batch["weight"])
    size = centre_l1(out["size"], batch["index"], batch["size"], batch["mask"])
    offset = centre_l1(out["offset"], batch["index"], batch["offset"], batch["mask"])
    total = focal + size_weight * size + offset_weight * offset
    return total, {"focal": focal.item(), "size": size.item(), "offset": offset.item()}
