"""Run a pose model on crops (flip and multi-scale testing) and map the decoded joints back to original pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cnnmrf.data.format import open_dataset
from cnnmrf.data.geometry import apply_affine, heatmap_to_input, invert_affine
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.devices import autocast
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.joints import FLIP_PERMUTATION
from cnnmrf.models.pose import PoseModel

# Names of the heatmap (and joint) sets a forward pass yields, as PoseModel names its outputs: the detector's logits
# and, with a spatial model, the spatial model's log-beliefs (the full model's final output).
DETECTOR, SPATIAL = "detector", "spatial"


class Joints(NamedTuple):
    """Decoded predictions: ``joints`` (N, K, 2) (x, y) in original-image pixels, ``scores`` (N, K) each map's peak
    value (logit or log-belief: comparable within a map only) and ``peak_mass`` (N, K) the log of the map's softmax at
    its peak (``peak - logsumexp(map)``: how concentrated the map is, comparable across crops)."""

    joints: np.ndarray
    scores: np.ndarray
    peak_mass: np.ndarray


def heatmap_to_original(coords: np.ndarray, transforms: np.ndarray, stride: int) -> np.ndarray:
    """Map heatmap pixels back to original-image pixels.

    Args:
        coords: (N, K, 2) (x, y) in heatmap pixels.
        transforms: (N, 2, 3) original-image -> model-input affine transforms (one per crop).
        stride: model-input pixels per heatmap pixel.

    Returns:
        (N, K, 2) (x, y) in original-image pixels.
    """
    points = heatmap_to_input(coords, stride)  # (N, K, 2) model-input pixels
    to_original = invert_affine(np.asarray(transforms, dtype=np.float64))  # (N, 2, 3) input -> original
    return apply_affine(to_original[:, None], points)  # (N, K, 2)


def zoom_images(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Zoom crops by ``scale`` about their centre (``augmentation_transform(S, scale, 0, False)``; > 1 enlarges).

    Shapes: (B, 3, S, S) -> (B, 3, S, S); pixels from outside the crop are black, as outside images in preprocess.
    """
    theta = images.new_tensor([[1.0 / scale, 0.0, 0.0], [0.0, 1.0 / scale, 0.0]]).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, S, S, 2) source positions
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def unzoom_heatmaps(maps: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample heatmaps of a crop zoomed by ``scale`` back into the unzoomed crop's heatmap frame.

    A zoom about the input centre is the same zoom about the heatmap centre ((H - 1) / 2), so reference pixel h
    reads the zoomed map at ``c + scale * (h - c)`` (bilinear). Parts of the reference frame the zoomed crop did not
    see (``scale`` > 1) get weight 0.

    Shapes: (B, K, H, W) -> maps (B, K, H, W) premultiplied by the weight, and weights (1, 1, H, W) in [0, 1].
    """
    batch, _, height, width = maps.shape
    theta = maps.new_tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]])[None]  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)  # (1, H, W, 2)
    weight = F.grid_sample(maps.new_ones(1, 1, height, width), grid, align_corners=False)  # (1, 1, H, W)
    warped = F.grid_sample(maps, grid.expand(batch, -1, -1, -1), align_corners=False)  # (B, K, H, W) = map * weight
    return warped, weight


@torch.no_grad()
def predict_heatmap_sets(
    model: PoseModel, images: torch.Tensor, config: InferenceConfig | None = None
) -> dict[str, torch.Tensor]:
    """Detector and (when used) spatial-model heatmaps of a batch of crops, from the same forward passes.

    Each variant (every one of ``config.scales``, and its mirror with ``config.flip_test``) is run through the
    model; mirrored maps are flipped back with left/right channels swapped, zoomed maps are resampled into the
    reference heatmap frame (:func:`unzoom_heatmaps`), and the score maps (logits, log-beliefs) are averaged per
    pixel, weighted by how much of the variant covered that pixel. Pixels no variant saw (only if 1.0 is not among
    the scales) get the map's minimum. With ``scales == (1.0,)`` this is exactly the plain (or flip-averaged) output.

    Args:
        model: the pose model, in eval mode.
        images: (B, 3, S, S) crops in [0, 1].
        config: use of the spatial model, flip and scales, the detector's arithmetic (its decoder is not used here;
            default :class:`InferenceConfig`).

    Returns:
        ``{"detector": (B, K, H, W)}`` plus ``"spatial": (B, K, H, W)`` when the spatial model ran; higher is better.
    """
    config = config or InferenceConfig()
    use_spatial, flip_test, scales, dtype = config.use_spatial, config.flip_test, config.scales, config.dtype
    perm = list(FLIP_PERMUTATION)
    sums: dict[str, torch.Tensor] = {}
    weights: dict[float, torch.Tensor | float] = {}
    for scale in scales:
        zoomed = images if scale == 1.0 else zoom_images(images, scale)  # (B, 3, S, S)
        zoomed = zoomed.contiguous(memory_format=torch.channels_last)  # NHWC: ~1.4x faster convolutions on CPUs
        for flip in (False, True) if flip_test else (False,):
            with autocast(images.device, dtype):
                out = model(zoomed.flip(-1) if flip else zoomed, use_spatial=use_spatial)
            maps = {name: m.float() for name, m in out.items()}  # DETECTOR, and SPATIAL when it ran
            for name, m in maps.items():  # (B, K, H, W) each
                if flip:
                    m = m.flip(-1)[:, perm]
                if scale != 1.0:
                    m, weight = unzoom_heatmaps(m, scale)
                    weights[scale] = weight
                else:
                    weights[scale] = 1.0
                sums[name] = m if name not in sums else sums[name] + m
    per_variant = 2 if flip_test else 1
    total = sum(weights[s] for s in scales) * per_variant  # float, or (1, 1, H, W)
    if not isinstance(total, torch.Tensor):
        return {name: s / total for name, s in sums.items()}
    seen = total > 1e-6  # (1, 1, H, W)
    out_maps = {}
    for name, s in sums.items():
        mean = s / total.clamp_min(1e-6)  # (B, K, H, W)
        floor = mean.masked_fill(~seen, float("inf")).amin(dim=(-2, -1), keepdim=True)  # (B, K, 1, 1)
        out_maps[name] = torch.where(seen, mean, floor)
    return out_maps


def decode_to_original(heatmaps: torch.Tensor, transforms: np.ndarray, stride: int, decoder: Decoder) -> Joints:
    """Decode peaks of (B, K, H, W) heatmaps and map them through (B, 2, 3) crop transforms to original pixels."""
    maps = heatmaps.float().cpu()  # (B, K, H, W)
    coords, scores = decoder(maps)  # (B, K, 2), (B, K)
    mass = maps.flatten(-2).amax(dim=-1) - torch.logsumexp(maps.flatten(-2), dim=-1)  # (B, K)
    return Joints(heatmap_to_original(coords.double().numpy(), transforms, stride), scores.numpy(), mass.numpy())


@torch.no_grad()
def predict_crops(
    model: PoseModel,
    crops: np.ndarray,
    transforms: np.ndarray,
    device: torch.device | str = "cpu",
    config: InferenceConfig | None = None,
) -> dict[str, Joints]:
    """Joints of a batch of model-input crops, for the detector alone and (when it ran) the full model.

    Args:
        model: the pose model (eval mode, on ``device``).
        crops: (B, S, S, 3) uint8 crops.
        transforms: (B, 2, 3) original-image -> crop transforms.
        device: where the model lives.
        config: use of the spatial model, flip, scales, decoding and arithmetic (default :class:`InferenceConfig`).

    Returns:
        ``{"detector": Joints}`` plus ``"spatial": Joints`` when the spatial model ran.
    """
    config = config or InferenceConfig()
    images = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    maps = predict_heatmap_sets(model, images, config)  # name -> (B, K, H, W)
    stride = model.config.detector.stride
    return {name: decode_to_original(m, transforms, stride, config.decoder) for name, m in maps.items()}


@torch.no_grad()
def predict_rows(
    model: PoseModel,
    h5_path: Path,
    split: str,
    rows: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    config: InferenceConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Joints]:
    """Predict joints for rows of a split of the HDF5 dataset, detector alone and full model in one pass.

    Args:
        model: the pose model (on ``device``); it is put in eval mode.
        h5_path: dataset made by ``cnnmrf preprocess``.
        split: "train" or "test".
        rows: (N,) row numbers in the split, any order.
        batch_size: crops per forward pass (times the number of flip/scale variants).
        device: where the model lives.
        config: use of the spatial model, flip, scales, decoding and arithmetic (default :class:`InferenceConfig`).
        on_progress: called with (done, total) after each batch.

    Returns:
        ``{"detector": Joints}`` plus ``"spatial": Joints`` when the spatial model ran, in the order of ``rows``.
    """
    config = config or InferenceConfig()
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    parts: dict[str, list[Joints]] = {}
    with open_dataset(h5_path) as dataset:
        for start in range(0, len(rows), batch_size):
            batch = dataset.read(split, ("images", "transform"), rows[start : start + batch_size])
            crops, transforms = batch["images"], batch["transform"]  # (B, S, S, 3) uint8, (B, 2, 3)
            for name, joints in predict_crops(model, crops, transforms, device, config).items():
                parts.setdefault(name, []).append(joints)
            if on_progress is not None:
                on_progress(min(start + batch_size, len(rows)), len(rows))
    if not parts:  # no rows: empty arrays of the right shape
        k = model.config.detector.num_joints
        empty = Joints(np.zeros((0, k, 2)), np.zeros((0, k), np.float32), np.zeros((0, k), np.float32))
        return {DETECTOR: empty, **({SPATIAL: empty} if config.use_spatial and model.spatial is not None else {})}
    return {name: Joints(*(np.concatenate(parts) for parts in zip(*ps))) for name, ps in parts.items()}


def final_joints(sets: dict[str, Joints]) -> Joints:
    """The final model's joints of a prediction set: the spatial model's when it ran, else the detector's."""
    return sets.get(SPATIAL, sets[DETECTOR])
