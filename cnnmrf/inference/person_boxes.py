"""The person detector's maps to torso boxes: local-maximum NMS, top-k, boxes in original pixels; one-pass detection."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnmrf.data.person_frames import TORSO_ASPECT, whole_frame_input
from cnnmrf.devices import autocast
from cnnmrf.models.person import PersonDetector


def decode_boxes(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    k: int,
    stride: int = 4,
    scale: float = 1.0,
    window: int = 3,
) -> torch.Tensor:
    """Top-``k`` torso boxes of the detector's maps, each a local maximum of the centre heatmap.

    A cell ``c`` with offset ``o`` puts the centre at input pixel ``(c + o + 0.5) * stride - 0.5``, the height is
    ``stride * exp(size)`` and the width ``TORSO_ASPECT`` times it; an input pixel ``p`` is original pixel
    ``(p + 0.5) / scale - 0.5`` (``scale``: input pixels per original pixel; pixel edges aligned, as resizing does).

    Args:
        heat: (B, 1, H, W) centre logits.
        size: (B, 1, H, W) log(torso height / stride).
        offset: (B, 2, H, W) centre minus cell, x and y, in cells.
        k: boxes per image (fewer cells than k: all cells; the weakest then score 0).
        stride: input pixels per cell.
        scale: input pixels per original pixel.
        window: side of the max-pooling window that keeps only local maxima.

    Returns:
        (B, k, 5) boxes ``x1, y1, x2, y2, score`` (score = sigmoid of the logit), highest score first.
    """
    heat, size, offset = heat.float(), size.float(), offset.float()
    b, _, h, w = heat.shape
    prob = torch.sigmoid(heat)  # (B, 1, H, W)
    peak = F.max_pool2d(prob, window, stride=1, padding=window // 2)
    kept = torch.where(prob == peak, prob, torch.zeros_like(prob)).flatten(1)  # (B, H*W)
    k_found = min(k, h * w)
    score, index = kept.topk(k_found, dim=1)  # (B, k')

    def gather(maps: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, k')
        return maps.flatten(2).gather(2, index[:, None].expand(-1, maps.shape[1], -1))

    off, log_h = gather(offset), gather(size)[:, 0]  # (B, 2, k'), (B, k')
    cx = ((index % w).float() + off[:, 0] + 0.5) * stride - 0.5  # (B, k') input pixels
    cy = ((index // w).float() + off[:, 1] + 0.5) * stride - 0.5
    height = stride * log_h.clamp(max=20.0).exp()
    half_w, half_h = TORSO_ASPECT * height / 2, height / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)  # (B, k', 4) input pixels
    boxes = (boxes + 0.5) / scale - 0.5  # original pixels
    out = torch.cat([boxes, score[..., None]], dim=-1)  # (B, k', 5)
    if k_found < k:
        out = torch.cat([out, out.new_zeros(b, k - k_found, 5)], dim=1)
    return out


@torch.no_grad()
def detect_people(
    model: PersonDetector,
    image: Image.Image,
    k: int = 5,
    long_side: int = 320,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    decode_factor: float = 1.0,
) -> np.ndarray:
    """The ``k`` best torso boxes of a photo in one pass of the detector over it resized to ``long_side``.

    Args:
        decode_factor: original pixels per pixel of ``image`` (a JPEG decoded smaller: > 1).

    Returns:
        (k, 5) float64 ``x1, y1, x2, y2, score`` in the photo's original pixels, highest score first.
    """
    device = torch.device(device)
    pixels, scale = whole_frame_input(image, long_side, model.config.multiple)
    batch = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None].float().div_(255.0).to(device)
    with autocast(device, dtype):
        out = model(batch)
    boxes = decode_boxes(out["heat"], out["size"], out["offset"], k, model.config.stride, scale)
    boxes = boxes[0].cpu().numpy().astype(np.float64)  # (k, 5) decoded pixels
    f = decode_factor
    boxes[:, :4] = boxes[:, :4] * f + (f - 1) / 2  # decoded (integer-centre) -> original pixels
    return boxes
