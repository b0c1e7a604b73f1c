"""Run a pose model on dataset crops and map the decoded joints back to original-image pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnmrf.data.geometry import heatmap_to_input, invert_affine
from cnnmrf.data.heatmaps import decode_heatmaps
from cnnmrf.joints import FLIP_PERMUTATION
from cnnmrf.models.pose import PoseModel


def heatmap_to_original(coords: np.ndarray, transforms: np.ndarray, stride: int) -> np.ndarray:
    """(N, K, 2) heatmap pixels + (N, 2, 3) original->input transforms -> (N, K, 2) original-image pixels."""
    points = heatmap_to_input(coords, stride)  # (N, K, 2) model-input pixels
    inverse = np.stack([invert_affine(t) for t in transforms])  # (N, 2, 3)
    return np.einsum("nij,nkj->nki", inverse[:, :, :2], points) + inverse[:, None, :, 2]


@torch.no_grad()
def predict_heatmaps(
    model: PoseModel, images: torch.Tensor, use_spatial: bool = True, flip_test: bool = False
) -> torch.Tensor:
    """Final heatmaps for a batch of crops, optionally averaged with those of the mirrored crops.

    Shapes: images (B, 3, S, S) in [0, 1] -> (B, K, S/4, S/4) scores (higher is better).
    """
    heatmaps = PoseModel.final(model(images, use_spatial=use_spatial))  # (B, K, H, W)
    if flip_test:
        mirrored = PoseModel.final(model(images.flip(-1), use_spatial=use_spatial))  # (B, K, H, W) mirrored
        heatmaps = 0.5 * (heatmaps + mirrored.flip(-1)[:, list(FLIP_PERMUTATION)])
    return heatmaps


@torch.no_grad()
def predict_rows(
    model: PoseModel,
    h5_path: Path,
    split: str,
    rows: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    use_spatial: bool = True,
    flip_test: bool = False,
    refine: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict joints for rows of a split of the HDF5 dataset.

    Returns:
        joints (N, K, 2) in original-image pixels and scores (N, K).
    """
    import h5py

    model.eval()
    stride = model.config.detector.stride
    joints, scores = [], []
    with h5py.File(h5_path, "r") as h5:
        group = h5[split]
        rows = np.asarray(rows)
        for start in range(0, len(rows), batch_size):
            batch_rows = rows[start : start + batch_size]
            order = np.argsort(batch_rows)  # h5py fancy indexing needs increasing indices
            images_np = np.empty((len(batch_rows), *group["images"].shape[1:]), np.uint8)
            images_np[order] = group["images"][batch_rows[order]]
            images = torch.from_numpy(images_np).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)
            heatmaps = predict_heatmaps(model, images, use_spatial, flip_test)  # (B, K, H, W)
            coords, score = decode_heatmaps(heatmaps.float().cpu(), refine=refine)  # (B, K, 2), (B, K)
            transforms = group["transform"][np.sort(batch_rows)][np.argsort(order)]  # (B, 2, 3)
            joints.append(heatmap_to_original(coords.double().numpy(), transforms, stride))
            scores.append(score.numpy())
    return np.concatenate(joints), np.concatenate(scores)
