"""PyTorch dataset over the HDF5 file, with the training augmentations (scale, rotation, flip, colour)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnmrf.data.format import DatasetFile, open_dataset
from cnnmrf.data.geometry import apply_affine, augmentation_transform, input_to_heatmap, pil_affine_data
from cnnmrf.data.heatmaps import encode_heatmaps
from cnnmrf.joints import FLIP_PERMUTATION


@dataclass
class AugmentConfig:
    """Random training augmentations; every geometric one is applied to joints and heatmaps too."""

    scale: float = 0.25  # zoom drawn uniformly from [1 - scale, 1 + scale]
    rotation: float = 20.0  # rotation drawn uniformly from [-rotation, +rotation] degrees
    shift: float = 0.05  # translation, as a fraction of the input side, each axis
    flip: float = 0.5  # probability of a horizontal mirror (left/right joints swap channels)
    color: float = 0.2  # brightness, contrast and saturation jitter amplitude


def holdout_rows(num_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the training split's rows into (train rows, validation rows), both sorted: a fixed random
    ``fraction`` is held out for validation, drawn with ``seed`` (training and ``evaluate --split val`` agree)."""
    order = np.random.default_rng(seed).permutation(num_rows)
    n_val = int(round(fraction * num_rows)) if num_rows > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class FlicDataset(Dataset):
    """Examples of one split of a cnnmrf HDF5 file.

    The file is opened lazily in each DataLoader worker. Augmentation is drawn from a generator seeded by
    ``(seed, epoch, index)``, so a run is reproducible whatever the number of workers; call
    :meth:`set_epoch` before each epoch. Without augmentation the heatmaps are the ones stored in the file;
    with it they are rendered again for the augmented joints (``encode_heatmaps``, as preprocess renders them).

    Each item is a dict: ``image`` (3, S, S) float32 in [0, 1]; ``heatmaps`` (K, H, W) float32; ``joints``
    (K, 2) float32 model-input pixels; ``visible`` (K,) bool; ``row`` int (row in the split).
    """

    def __init__(
        self,
        path: Path,
        split: str,
        rows: np.ndarray | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        with open_dataset(self.path) as dataset:
            self.config = dataset.config
            n = dataset.num_rows(split)
        self.split = split
        self.rows = np.arange(n) if rows is None else np.asarray(rows)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._file: DatasetFile | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None  # each worker opens its own handle
        return state

    def _read(self, row: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self._file is None:
            self._file = open_dataset(self.path)
        return self._file.read_row(self.split, row, fields)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        if self.augment is None:
            stored = self._read(row, ("images", "joints_input", "visible", "heatmaps"))
            heatmaps = stored["heatmaps"].astype(np.float32)  # (K, H, W), as preprocess rendered them
        else:
            stored = self._read(row, ("images", "joints_input", "visible"))
        image = stored["images"]  # (S, S, 3) uint8
        joints = stored["joints_input"].astype(np.float64)  # (K, 2)
        visible = stored["visible"]  # (K,)
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, row))
            image, joints, visible = augment_example(image, joints, visible, self.augment, rng)
            cfg = self.config
            heatmaps = encode_heatmaps(
                input_to_heatmap(joints, cfg.heatmap_stride), visible, cfg.heatmap_size, cfg.heatmap_sigma
            )  # (K, H, W)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "heatmaps": torch.from_numpy(heatmaps),
            "joints": torch.from_numpy(joints.astype(np.float32)),
            "visible": torch.from_numpy(np.asarray(visible, dtype=bool)),
            "row": torch.tensor(row),
        }


def augment_example(
    image: np.ndarray, joints: np.ndarray, visible: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one random draw of the augmentations to an (S, S, 3) uint8 image and its (K, 2) joints.

    Returns the new image, joints (channels swapped on a flip) and visibility (False once a joint leaves the frame).
    """
    size = image.shape[0]
    flip = bool(rng.random() < cfg.flip)
    transform = augmentation_transform(
        size,
        scale=float(rng.uniform(1 - cfg.scale, 1 + cfg.scale)),
        rotation_deg=float(rng.uniform(-cfg.rotation, cfg.rotation)),
        flip=flip,
        shift=tuple(rng.uniform(-cfg.shift, cfg.shift, size=2) * size),
    )
    warped = Image.fromarray(image).transform(
        (size, size), Image.AFFINE, pil_affine_data(transform), resample=Image.BILINEAR
    )
    out = _jitter_colour(np.asarray(warped, dtype=np.float32), cfg.color, rng)
    joints = apply_affine(transform, joints)
    if flip:
        perm = list(FLIP_PERMUTATION)
        joints, visible = joints[perm], np.asarray(visible)[perm]
    inside = np.all((joints >= 0) & (joints <= size - 1), axis=-1)
    return out, joints, np.asarray(visible) & inside


def _jitter_colour(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation on an (S, S, 3) float image in [0, 255]; returns uint8."""
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, size=3)
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * saturation
    image = (image - image.mean()) * contrast + image.mean()
    return np.clip(image * brightness, 0, 255).astype(np.uint8)
