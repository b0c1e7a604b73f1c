"""Heatmap codec: encode joints as Gaussian heatmaps and decode peaks (with sub-pixel refinement)."""

from __future__ import annotations

import numpy as np
import torch


def encode_heatmaps(joints: np.ndarray, visible: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Render one Gaussian per joint.

    Args:
        joints: (..., K, 2) joint positions (x, y) in heatmap pixels.
        visible: (..., K) bool; invisible joints get an all-zero map.
        size: (H, W) of the heatmaps.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        (..., K, H, W) float32 heatmaps with peak value 1 at each visible joint.
    """
    joints = np.asarray(joints, dtype=np.float64)
    height, width = size
    ys = np.arange(height, dtype=np.float64)
    xs = np.arange(width, dtype=np.float64)
    gx = np.exp(-((xs - joints[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., K, W)
    gy = np.exp(-((ys - joints[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., K, H)
    maps = gy[..., :, None] * gx[..., None, :]  # (..., K, H, W)
    maps *= np.asarray(visible, dtype=np.float64)[..., None, None]
    return maps.astype(np.float32)


def decode_heatmaps(heatmaps: torch.Tensor, refine: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Find each map's peak, optionally refined to sub-pixel precision by a 1-D parabola fit on each axis.

    Args:
        heatmaps: (..., K, H, W) scores (logits, log-beliefs or heatmaps; higher is better).
        refine: fit a parabola through the peak and its two neighbours along x and along y.

    Returns:
        coords (..., K, 2) float (x, y) in heatmap pixels and scores (..., K), the value at the integer peak.
    """
    *lead, height, width = heatmaps.shape
    flat = heatmaps.reshape(*lead, height * width)
    scores, arg = flat.max(dim=-1)  # (..., K)
    py, px = arg // width, arg % width
    coords = torch.stack([px, py], dim=-1).to(heatmaps.dtype if heatmaps.is_floating_point() else torch.float32)
    if refine:
        coords = coords + _parabola_offsets(heatmaps, px, py)
    return coords, scores


def _parabola_offsets(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """(..., K, 2) sub-pixel offsets in [-0.5, 0.5] from neighbours of the integer peak (0 at borders)."""
    *lead, height, width = heatmaps.shape
    flat = heatmaps.reshape(*lead, height * width)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).unsqueeze(-1)).squeeze(-1)

    centre = at(px, py)
    offsets = []
    for lo, hi, inside in (
        (at(px - 1, py), at(px + 1, py), (px > 0) & (px < width - 1)),
        (at(px, py - 1), at(px, py + 1), (py > 0) & (py < height - 1)),
    ):
        curvature = lo + hi - 2 * centre  # <= 0 at a maximum
        step = 0.5 * (lo - hi) / curvature.where(curvature < -1e-12, torch.full_like(curvature, -1.0))
        step = torch.where(inside & (curvature < -1e-12), step, torch.zeros_like(step))
        offsets.append(step.clamp(-0.5, 0.5))
    return torch.stack(offsets, dim=-1)
