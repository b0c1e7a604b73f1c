"""Heatmap codec: encode joints as Gaussian heatmaps; decode peaks (parabola refinement or DARK)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnmrf.data.decoding import Decoding


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
    visible = np.asarray(visible, dtype=bool)
    joints = np.where(visible[..., None], np.asarray(joints, dtype=np.float64), 0.0)  # an invisible one may be NaN
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
        coords = coords + parabola_offsets(heatmaps, px, py)
    return coords, scores


def _value_at(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Values of (..., K, H*W) flattened maps at integer (x, y) (..., K), clamped into the (H, W) map."""
    height, width = size
    return flat.gather(-1, (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).unsqueeze(-1)).squeeze(-1)


def parabola_offsets(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """(..., K, 2) sub-pixel offsets in [-0.5, 0.5] of integer peaks (..., K) of (..., K, H, W) maps: a parabola
    through each peak and its two neighbours per axis (0 at borders)."""
    *lead, height, width = heatmaps.shape
    flat = heatmaps.reshape(*lead, height * width)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _value_at(flat, x, y, (height, width))

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


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) maps (edges replicated); ``sigma`` in pixels, 0 returns ``maps``."""
    if sigma <= 0:
        return maps
    *lead, height, width = maps.shape
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (2r+1,)
    x = maps.reshape(-1, 1, height, width)  # (M, 1, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(*lead, height, width)


def decode_heatmaps_dark(log_scores: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution-aware decoding (DARK, Zhang et al. CVPR 2020) of log-score maps.

    Each map's softmax (the distribution the spatial-softmax loss trains) is smoothed by a Gaussian of ``sigma``
    heatmap pixels, which makes its log close to a quadratic near the mode; one 2-D Newton step on that log from the
    integer peak, ``-H^-1 g`` with central differences (the Hessian's cross term included), gives the sub-pixel
    position. Steps are clamped to one pixel; where the Hessian is not negative definite the integer peak is kept.

    Args:
        log_scores: (..., K, H, W) logits or log-beliefs (higher is better).
        sigma: Gaussian smoothing in heatmap pixels (the training targets' sigma works well).

    Returns:
        coords (..., K, 2) float (x, y) in heatmap pixels and scores (..., K), each input map's maximum.
    """
    *lead, height, width = log_scores.shape
    scores = log_scores.reshape(*lead, height * width).amax(dim=-1)  # (..., K)
    prob = torch.softmax(log_scores.float().reshape(*lead, height * width), dim=-1).reshape(log_scores.shape)
    smooth = torch.log(gaussian_blur(prob, sigma).clamp_min(1e-12))  # (..., K, H, W)
    flat = smooth.reshape(*lead, height * width)
    arg = flat.argmax(dim=-1)  # (..., K)
    py, px = arg // width, arg % width

    def at(dx: int, dy: int) -> torch.Tensor:
        return _value_at(flat, px + dx, py + dy, (height, width))  # (..., K)

    centre = at(0, 0)
    gx, gy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
    hxx, hyy = at(1, 0) - 2 * centre + at(-1, 0), at(0, 1) - 2 * centre + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    concave = (det > 1e-9) & (hxx < 0)
    safe = torch.where(concave, det, torch.ones_like(det))
    step_x = torch.where(concave, -(hyy * gx - hxy * gy) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    step_y = torch.where(concave, -(hxx * gy - hxy * gx) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    coords = torch.stack([px + step_x, py + step_y], dim=-1)  # (..., K, 2)
    return coords, scores


@dataclass(frozen=True)
class Decoder:
    """A decoding method and its smoothing; call it on (..., K, H, W) maps to get (coords (..., K, 2), scores)."""

    method: Decoding = Decoding.dark  # DARK: the best on validation at every threshold (docs/results.md)
    sigma: float = 1.5  # DARK's smoothing in heatmap pixels: the training targets' sigma (PreprocessConfig)

    def __call__(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        method = Decoding(self.method)
        if method is Decoding.dark:
            return decode_heatmaps_dark(heatmaps, self.sigma)
        return decode_heatmaps(heatmaps, refine=method is Decoding.parabola)


DEFAULT_DECODER = Decoder()  # DARK with the default targets' sigma
