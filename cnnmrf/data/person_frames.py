"""Whole FLIC frames and their torso boxes for the person detector: frame lists, scale augmentation and centre targets.

Frames are read on the fly from the FLIC copy (folder or zip, through :class:`FlicSource`) and decoded with libjpeg's
DCT down-scaling to the size each draw needs (about a millisecond a frame), so nothing is cached and the crop dataset
(``cnnmrf preprocess``) is not involved. Geometry as in ``docs/data-format.md``: pixel centres at integer
coordinates; a target cell ``c`` at stride ``R`` is centred at input pixel ``(c + 0.5) * R - 0.5``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.flic import FlicExample, FlicSource
from cnnmrf.data.images import decode_image, render
from cnnmrf.errors import CnnmrfError

MAX_PEOPLE = 4  # centres kept per training image (FLIC frames hold at most 3 annotated people)
TORSO_ASPECT = 2.0 / 3.0  # FLIC torso boxes are all 2:3 (width : height); the detector predicts the height only


@dataclass
class PersonFrame:
    """A FLIC frame and every annotated person of one split in it."""

    file: str  # image file name in FLIC's images/
    boxes: np.ndarray  # (P, 4) torso boxes x1, y1, x2, y2, original pixels


@dataclass
class PersonAugment:
    """How training images are drawn from frames: an S x S input holding a frame shrunk or enlarged and padded."""

    input_size: int = 256  # S, side of the square training input
    min_torso: float = 10.0  # torso-box heights drawn log-uniformly in [min_torso, max_torso] input pixels ...
    max_torso: float = 180.0  # ... (a person from ~1/8 of a 256 px photo's height to a portrait filling it)
    whole_frame: float = 0.25  # probability of showing the whole frame at long side S instead (as inference sees it)
    flip: float = 0.5  # probability of a horizontal mirror
    color: float = 0.2  # brightness, contrast and saturation jitter amplitude
    sigma_scale: float = 0.1  # centre Gaussian's sigma = sigma_scale x torso height (cells), at least 0.5 cell
    near: float = 1.0  # negatives within near x torso height of an annotated centre count fully ...
    far_weight: float = 0.1  # ... elsewhere in a FLIC frame (maybe an unannotated person) with this weight


def frames_of(examples: list[FlicExample]) -> list[PersonFrame]:
    """Group annotated people by frame (frames in first-appearance order)."""
    boxes: dict[str, list[np.ndarray]] = {}
    for example in examples:
        boxes.setdefault(example.file, []).append(np.asarray(example.torsobox, dtype=np.float64))
    return [PersonFrame(file, np.stack(found)) for file, found in boxes.items()]


def train_val_frames(flic: FlicSource, val_fraction: float, seed: int) -> tuple[list[PersonFrame], list[PersonFrame]]:
    """The training split's frames, parted as the crop training parts its rows (:func:`holdout_rows` over FLIC's
    training examples in examples.mat order): a frame with any held-out person is a validation frame, the others
    training frames. Each frame holds all its annotated training-split people. The test split is never read."""
    train = [e for e in flic.examples() if e.split == "train"]
    if not train:
        raise CnnmrfError(f"{flic.path} has no training examples")
    _, val_rows = holdout_rows(len(train), val_fraction, seed)
    val_files = {train[i].file for i in val_rows}
    frames = frames_of(train)
    return [f for f in frames if f.file not in val_files], [f for f in frames if f.file in val_files]


def centre_targets(
    boxes: np.ndarray, cells: tuple[int, int], stride: int, sigma_scale: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet targets of torso boxes in input pixels.

    Args:
        boxes: (P, 4) torso boxes, input pixels; boxes whose centre cell lies outside the map are dropped.
        cells: (H, W) of the output map.
        stride: input pixels per cell.
        sigma_scale: the Gaussian's sigma in cells per cell of torso height (at least 0.5 cell).

    Returns:
        heat (H, W) float32: per cell the largest Gaussian, exactly 1 at each centre's cell; index (M,) int64: the
        centre cells (row * W + column); size (M,) float32: log(torso height / stride); offset (M, 2) float32: the
        centre minus its cell, x and y, in [-0.5, 0.5) cells; mask (M,) bool: which of the M = :data:`MAX_PEOPLE`
        slots hold a person.
    """
    h, w = cells
    heat = np.zeros((h, w), np.float32)
    index, size = np.zeros(MAX_PEOPLE, np.int64), np.zeros(MAX_PEOPLE, np.float32)
    offset, mask = np.zeros((MAX_PEOPLE, 2), np.float32), np.zeros(MAX_PEOPLE, bool)
    ys, xs = np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]
    slot = 0
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        centre = ((box[:2] + box[2:]) / 2 + 0.5) / stride - 0.5  # (2,) cells
        cell = np.floor(centre + 0.5)
        height = (box[3] - box[1]) / stride
        if not (0 <= cell[0] < w and 0 <= cell[1] < h) or height <= 0 or slot == MAX_PEOPLE:
            continue
        sigma = max(sigma_scale * height, 0.5)
        blob = np.exp(-((xs - cell[0]) ** 2 + (ys - cell[1]) ** 2) / (2 * sigma**2))  # (H, W)
        np.maximum(heat, blob.astype(np.float32), out=heat)
        index[slot] = int(cell[1]) * w + int(cell[0])
        size[slot], offset[slot], mask[slot] = np.log(height), centre - cell, True
        slot += 1
    return heat, index, size, offset, mask


def negative_weights(boxes: np.ndarray, inside: np.ndarray, stride: int, near: float, far_weight: float) -> np.ndarray:
    """(H, W) weight of each cell's negative (no-centre) loss: 1 outside the frame (padding) and within ``near``
    torso heights of an annotated centre, ``far_weight`` elsewhere in the frame (FLIC leaves people unannotated).

    Args:
        boxes: (P, 4) annotated torso boxes in input pixels (every one of the frame, in the input or not).
        inside: (H, W) bool, whether each cell's centre lies in the frame.
        stride: input pixels per cell.
        near: radius of full weight, in torso heights.
        far_weight: weight elsewhere in the frame.
    """
    h, w = inside.shape
    py, px = np.mgrid[0:h, 0:w].astype(np.float64) * stride + (stride - 1) / 2  # (H, W) cell centres, input pixels
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres, heights = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 3] - boxes[:, 1]  # (P, 2), (P,)
    gap = np.hypot(px[None] - centres[:, 0, None, None], py[None] - centres[:, 1, None, None])  # (P, H, W)
    close = (gap <= near * heights[:, None, None]).any(axis=0)  # (H, W)
    return np.where(~inside | close, 1.0, far_weight).astype(np.float32)


def _jitter(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation of an (S, S, 3) uint8 image, as one affine map per pixel:
    ``b * (c * (g + s * (x - g) - m) + m)`` with ``g`` the pixel's grey and ``m`` the image mean."""
    values = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, size=3)
    grey = values.mean(axis=-1, keepdims=True)  # (S, S, 1)
    mean = float(grey.mean())  # saturation keeps the mean
    values *= brightness * contrast * saturation
    values += grey * (brightness * contrast * (1 - saturation)) + brightness * mean * (1 - contrast)
    return np.clip(values, 0, 255, out=values).astype(np.uint8)


class PersonFrameDataset(Dataset):
    """Training images for the person detector: FLIC frames (scale-augmented) and person-free photos.

    Items ``0 .. len(frames) - 1`` are frames, the rest person-free photos (``negatives``, each drawn as often as
    needed). Draws come from a generator seeded by ``(seed, epoch, item)``: call :meth:`set_epoch` before each epoch.
    Each item is a dict: ``image`` (3, S, S) uint8; ``heat`` (1, S/R, S/R) centre targets; ``weight``
    (1, S/R, S/R) negative-loss weights; ``index`` (M,), ``size`` (M,), ``offset`` (M, 2), ``mask`` (M,) as
    :func:`centre_targets` returns them.
    """

    def __init__(
        self,
        flic: FlicSource,
        frames: list[PersonFrame],
        stride: int,
        augment: PersonAugment,
        negatives: list[np.ndarray] | None = None,
        num_negatives: int = 0,
        seed: int = 0,
    ) -> None:
        self.flic, self.frames, self.stride, self.augment = flic, frames, stride, augment
        self.negatives = negatives or []
        self.num_negatives = num_negatives if self.negatives else 0
        self.seed, self.epoch = seed, 0
        if augment.input_size % stride:
            raise CnnmrfError(f"the input size {augment.input_size} is not a multiple of the stride {stride}")

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames) + self.num_negatives

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cfg, size = self.augment, self.augment.input_size
        rng = np.random.default_rng((self.seed, self.epoch, i))
        anchor = None  # the person the draw is scaled for
        if i < len(self.frames):
            frame = self.frames[i]
            data, (width, height) = self._read(frame.file)
            boxes = frame.boxes
            if rng.random() < cfg.whole_frame:
                scale = size / max(width, height)
            else:
                anchor = boxes[rng.integers(len(boxes))]
                torso = np.exp(rng.uniform(np.log(cfg.min_torso), np.log(cfg.max_torso)))
                scale = torso / max(anchor[3] - anchor[1], 1.0)
        else:
            photo = self.negatives[(i - len(self.frames)) % len(self.negatives)]
            height, width = photo.shape[:2]
            boxes = np.zeros((0, 4))
            scale = size / max(width, height) * np.exp(rng.uniform(np.log(0.5), np.log(3.0)))
        # Place the frame: anywhere in view where it fits; where it does not, the anchor person (frames) or any part
        # (photos) in view.
        span = np.array([width, height]) * scale  # (2,) input pixels
        fits = span <= size
        shift = rng.uniform(0.0, 1.0, 2) * (size - span)  # (2,) in [size - span, 0] where it does not fit
        if anchor is not None and not fits.all():
            centre = (anchor[:2] + anchor[2:]) / 2 * scale
            shift = np.where(fits, shift, rng.uniform(0.15, 0.85, size=2) * size - centre)
        flip = bool(rng.random() < cfg.flip)
        transform = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])  # original -> input pixels
        if flip:
            transform = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([transform, [0, 0, 1]])
        if i < len(self.frames):
            try:
                image, factor = decode_image(data, target_scale=scale)
            except ValueError as err:
                raise CnnmrfError(f"images/{frame.file} of {self.flic.path}: {err}") from err
        else:
            image, factor = Image.fromarray(photo), 1.0
        pixels = _jitter(render(image, transform, size, factor), cfg.color, rng)  # (S, S, 3)
        return self._item(pixels, boxes, transform, (width, height), negative=i >= len(self.frames))

    def _read(self, file: str) -> tuple[bytes, tuple[int, int]]:
        """A frame's bytes and its (width, height), from its header.

        Raises:
            CnnmrfError: the frame is missing, unreadable or not an image, naming it.
        """
        name = f"images/{file} of {self.flic.path}"
        try:
            data = self.flic.read_image_bytes(file)
            with Image.open(io.BytesIO(data)) as image:
                return data, image.size
        except FileNotFoundError:
            raise CnnmrfError(f"{name} does not exist") from None
        except OSError as err:  # PIL's UnidentifiedImageError too
            raise CnnmrfError(f"cannot read {name}: {err}") from err

    def _item(
        self, pixels: np.ndarray, boxes: np.ndarray, transform: np.ndarray, frame: tuple[int, int], negative: bool
    ) -> dict[str, torch.Tensor]:
        """The tensors of one drawn image: its pixels and the targets of its boxes (original pixels)."""
        cfg, stride = self.augment, self.stride
        cells = (cfg.input_size // stride, cfg.input_size // stride)
        corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 3]]], axis=1)  # (P, 2, 2)
        moved = corners @ transform[:, :2].T + transform[:, 2]  # (P, 2, 2) input pixels
        placed = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)  # (P, 4), a flip swaps x1 and x2
        heat, index, size, offset, mask = centre_targets(placed, cells, stride, cfg.sigma_scale)
        cell = np.mgrid[0 : cells[0], 0 : cells[1]].astype(np.float64) * stride + (stride - 1) / 2  # (2, H, W) y, x
        inverse = np.linalg.inv(np.vstack([transform, [0, 0, 1]]))[:2]
        ox = inverse[0, 0] * cell[1] + inverse[0, 1] * cell[0] + inverse[0, 2]  # (H, W) original pixels
        oy = inverse[1, 0] * cell[1] + inverse[1, 1] * cell[0] + inverse[1, 2]
        inside = (ox >= -0.5) & (ox <= frame[0] - 0.5) & (oy >= -0.5) & (oy <= frame[1] - 0.5)
        far = 1.0 if negative else cfg.far_weight
        weight = negative_weights(placed, inside, stride, cfg.near, far)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),  # uint8: 4x less to pass
            "heat": torch.from_numpy(heat)[None],
            "weight": torch.from_numpy(weight)[None],
            "index": torch.from_numpy(index),
            "size": torch.from_numpy(size),
            "offset": torch.from_numpy(offset),
            "mask": torch.from_numpy(mask),
        }


def whole_frame_input(image: Image.Image, long_side: int, multiple: int) -> tuple[np.ndarray, float]:
    """A photo resized to ``long_side`` pixels along its longer side and padded (black, right and bottom) to
    multiples of ``multiple``: what the detector sees in one pass.

    Returns:
        The (H, W, 3) uint8 input and its scale: input pixels per original pixel (sides rounded to whole pixels).
    """
    scale = long_side / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    resized = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))
    h, w = (-(-s // multiple) * multiple for s in resized.shape[:2])
    out = np.zeros((h, w, 3), np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out, scale
