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
from cnnmrf.data.flic import FlicExample, FlicSource, one_box_per_person
from cnnmrf.data.images import decode_image, render
from cnnmrf.errors import CnnmrfError

MAX_PEOPLE = 32  # centres kept per training image (FLIC frames hold at most 3 annotated people; grids up to 9 frames)
TORSO_ASPECT = 2.0 / 3.0  # FLIC torso boxes are all 2:3 (width : height); the detector predicts the height only


@dataclass
class PersonFrame:
    """A FLIC frame and every annotated person of one split in it."""

    file: str  # image file name in FLIC's images/
    boxes: np.ndarray  # (P, 4) torso boxes x1, y1, x2, y2, original pixels


@dataclass
class PersonAugment:
    """How training images are drawn from frames: an S x S input holding a frame shrunk or enlarged and padded, or a
    grid of shrunk frames."""

    input_size: int = 256  # S, side of the square training input
    min_torso: float = 6.0  # torso-box heights drawn log-uniformly in [min_torso, max_torso] input pixels: a person ...
    max_torso: float = 320.0  # ... from ~1/8 of the photo's height to a portrait whose hips fall below the frame
    whole_frame: float = 0.25  # probability of showing the whole frame at long side S instead (as inference sees it)
    tile: float = 0.2  # probability of a 2 x 2 or 3 x 3 grid of whole frames (several small people in one photo)
    # What lies around the frames: black (as the padding of inference's input), else half the time a flat colour,
    # half the time a person-free photo (when the dataset has some). Black alone taught the detector that a shrunk
    # frame on grey is one big torso (1/8-size validation frames: heights 2.6x too large, 2% found; 71% on black).
    background: float = 0.5  # probability of a flat colour or a person-free photo around the frames, not black
    flip: float = 0.5  # probability of a horizontal mirror
    color: float = 0.2  # brightness, contrast and saturation jitter amplitude
    sigma_scale: float = 0.1  # centre Gaussian's sigma = sigma_scale x torso height (cells), at least 0.5 cell
    near: float = 1.0  # negatives within near x torso height of an annotated centre count fully ...
    far_weight: float = 0.1  # ... elsewhere in a FLIC frame (maybe an unannotated person) with this weight


@dataclass
class Piece:
    """One frame or photo placed in a training input."""

    image: Image.Image  # decoded pixels (JPEG frames possibly at reduced resolution)
    factor: float  # original pixels per decoded pixel
    transform: np.ndarray  # (2, 3) original pixels -> input pixels
    boxes: np.ndarray  # (P, 4) annotated torso boxes, original pixels
    frame: tuple[int, int]  # original (width, height)


def frames_of(examples: list[FlicExample]) -> list[PersonFrame]:
    """Group annotated people by frame (frames in first-appearance order), one box per person
    (:func:`one_box_per_person`)."""
    mine: dict[str, list[FlicExample]] = {}
    for example in examples:
        mine.setdefault(example.file, []).append(example)
    return [
        PersonFrame(file, one_box_per_person(np.stack([e.torsobox for e in es]), np.stack([e.joints for e in es]))[0])
        for file, es in mine.items()
    ]


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
    boxes: np.ndarray, cells: tuple[int, int], stride: int, sigma_scale: float = 0.1, reach: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet targets of torso boxes in input pixels.

    Args:
        boxes: (P, 4) torso boxes, input pixels. A centre just outside the map (at most ``reach`` torso heights, a
            portrait's hips below the frame) is put on the nearest border cell, its offset reaching out to it;
            boxes whose centre lies farther out are dropped.
        cells: (H, W) of the output map.
        stride: input pixels per cell.
        sigma_scale: the Gaussian's sigma in cells per cell of torso height (at least 0.5 cell).
        reach: how far outside the map a centre may lie, in torso heights.

    Returns:
        heat (H, W) float32: per cell the largest Gaussian, exactly 1 at each centre's cell; index (M,) int64: the
        centre cells (row * W + column); size (M,) float32: log(torso height / stride); offset (M, 2) float32: the
        centre minus its cell, x and y, in cells ([-0.5, 0.5) inside the map); mask (M,) bool: which of the
        M = :data:`MAX_PEOPLE` slots hold a person.
    """
    h, w = cells
    heat = np.zeros((h, w), np.float32)
    index, size = np.zeros(MAX_PEOPLE, np.int64), np.zeros(MAX_PEOPLE, np.float32)
    offset, mask = np.zeros((MAX_PEOPLE, 2), np.float32), np.zeros(MAX_PEOPLE, bool)
    ys, xs = np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]
    slot = 0
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        centre = ((box[:2] + box[2:]) / 2 + 0.5) / stride - 0.5  # (2,) cells
        height = (box[3] - box[1]) / stride
        cell = np.clip(np.floor(centre + 0.5), 0, [w - 1, h - 1])  # (2,) x, y: the nearest cell in the map
        outside = np.abs(centre - cell).max() - 0.5  # cells beyond the map's edge (<= 0 inside)
        if height <= 0 or outside > reach * height or slot == MAX_PEOPLE:
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
        if i >= len(self.frames):
            pieces = [self._photo(self.negatives[(i - len(self.frames)) % len(self.negatives)], rng)]
        elif rng.random() < cfg.tile:
            pieces = self._grid(i, rng)
        else:
            pieces = [self._frame(self.frames[i], rng)]
        if rng.random() < cfg.flip:
            mirror = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]])
            for piece in pieces:
                piece.transform = mirror @ np.vstack([piece.transform, [0, 0, 1]])
        pixels = self._background(rng)  # (S, S, 3) uint8
        for piece in pieces:  # pieces never overlap; each renders black around itself, its coverage is its alpha
            drawn = render(piece.image, piece.transform, size, piece.factor)  # (S, S, 3) premultiplied by coverage
            if not pixels.any():  # over black, the piece is itself
                pixels = drawn.copy()
                continue
            cover = render(Image.new("L", piece.image.size, 255), piece.transform, size, piece.factor)  # (S, S)
            rows, cols = np.nonzero(cover)
            if not len(rows):  # out of view: nothing drawn
                continue
            box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # blended only where it covers
            behind = pixels[box] * (1.0 - cover[box][..., None] / 255.0)  # (h, w, 3) float64
            pixels = pixels if pixels.flags.writeable else pixels.copy()
            pixels[box] = np.clip(drawn[box] + behind, 0, 255).round().astype(np.uint8)
        return self._item(_jitter(pixels, cfg.color, rng), pieces, negative=i >= len(self.frames))

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """The (S, S, 3) uint8 canvas behind the pieces: black, a flat random colour or a person-free photo covering
        it (see :attr:`PersonAugment.background`)."""
        size, draw = self.augment.input_size, rng.random()
        if draw >= self.augment.background:
            return np.zeros((size, size, 3), np.uint8)
        if not self.negatives or draw < self.augment.background / 2:
            return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
        photo = self.negatives[rng.integers(len(self.negatives))]
        height, width = photo.shape[:2]
        scale = size / min(width, height) * rng.uniform(1.0, 2.0)  # covers the input whole
        shift = rng.uniform(0.0, 1.0, 2) * (size - np.array([width, height]) * scale)  # (2,) in [S - span, 0]
        return render(Image.fromarray(photo), np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]]), size)

    def _frame(self, frame: PersonFrame, rng: np.random.Generator) -> Piece:
        """A frame scaled so that one of its people (the anchor) has a drawn torso height, or whole at long side S;
        placed anywhere in view where it fits, else with the anchor in view."""
        cfg, size = self.augment, self.augment.input_size
        data, (width, height) = self._read(frame.file)
        anchor = None
        if rng.random() < cfg.whole_frame:
            scale = size / max(width, height)
        else:
            anchor = frame.boxes[rng.integers(len(frame.boxes))]
            torso = np.exp(rng.uniform(np.log(cfg.min_torso), np.log(cfg.max_torso)))
            scale = torso / max(anchor[3] - anchor[1], 1.0)
        span = np.array([width, height]) * scale  # (2,) input pixels
        fits = span <= size
        shift = rng.uniform(0.0, 1.0, 2) * (size - span)  # (2,) in [size - span, 0] where it does not fit
        if anchor is not None and not fits.all():
            centre = (anchor[:2] + anchor[2:]) / 2 * scale
            place = rng.uniform([0.15, 0.15], [0.85, 1.1])  # a large torso's centre may fall below the view
            shift = np.where(fits, shift, place * size - centre)
        return self._decoded(frame, data, (width, height), scale, shift)

    def _grid(self, i: int, rng: np.random.Generator) -> list[Piece]:
        """A 2 x 2 or 3 x 3 grid of whole frames, each shrunk into its cell (60-100% of it) at a random place:
        frame ``i`` and others drawn at random."""
        size = self.augment.input_size
        n = int(rng.choice([2, 3]))
        cell = size / n
        pieces = []
        for k in range(n * n):
            frame = self.frames[i] if k == 0 else self.frames[rng.integers(len(self.frames))]
            data, (width, height) = self._read(frame.file)
            scale = cell * rng.uniform(0.6, 1.0) / max(width, height)
            span = np.array([width, height]) * scale
            corner = np.array([k % n, k // n]) * cell + rng.uniform(0.0, 1.0, 2) * (cell - span)  # (2,) x, y
            pieces.append(self._decoded(frame, data, (width, height), scale, corner))
        return pieces

    def _decoded(
        self, frame: PersonFrame, data: bytes, original: tuple[int, int], scale: float, shift: np.ndarray
    ) -> Piece:
        """A frame's piece: its bytes decoded for ``scale`` and placed at ``shift`` (input pixels)."""
        try:
            image, factor = decode_image(data, target_scale=scale)
        except ValueError as err:
            raise CnnmrfError(f"images/{frame.file} of {self.flic.path}: {err}") from err
        transform = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])  # original -> input pixels
        return Piece(image, factor, transform, frame.boxes, original)

    def _photo(self, photo: np.ndarray, rng: np.random.Generator) -> Piece:
        """A person-free photo at 0.5-3x the whole-photo scale, anywhere (partly) in view."""
        size = self.augment.input_size
        height, width = photo.shape[:2]
        scale = size / max(width, height) * np.exp(rng.uniform(np.log(0.5), np.log(3.0)))
        shift = rng.uniform(0.0, 1.0, 2) * (size - np.array([width, height]) * scale)
        transform = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
        return Piece(Image.fromarray(photo), 1.0, transform, np.zeros((0, 4)), (width, height))

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

    def _item(self, pixels: np.ndarray, pieces: list[Piece], negative: bool) -> dict[str, torch.Tensor]:
        """The tensors of one drawn image: its pixels and the targets of its pieces' boxes."""
        cfg, stride = self.augment, self.stride
        cells = (cfg.input_size // stride, cfg.input_size // stride)
        cell = np.mgrid[0 : cells[0], 0 : cells[1]].astype(np.float64) * stride + (stride - 1) / 2  # (2, H, W) y, x
        placed, inside = [np.zeros((0, 4))], np.zeros(cells, bool)
        for piece in pieces:
            corners = np.stack([piece.boxes[:, [0, 1]], piece.boxes[:, [2, 3]]], axis=1)  # (P, 2, 2)
            moved = corners @ piece.transform[:, :2].T + piece.transform[:, 2]  # (P, 2, 2) input pixels
            placed.append(np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1))  # a flip swaps x1 and x2
            inverse = np.linalg.inv(np.vstack([piece.transform, [0, 0, 1]]))[:2]
            ox = inverse[0, 0] * cell[1] + inverse[0, 1] * cell[0] + inverse[0, 2]  # (H, W) original pixels
            oy = inverse[1, 0] * cell[1] + inverse[1, 1] * cell[0] + inverse[1, 2]
            width, height = piece.frame
            inside |= (ox >= -0.5) & (ox <= width - 0.5) & (oy >= -0.5) & (oy <= height - 0.5)
        boxes = np.concatenate(placed)  # (P, 4) input pixels
        heat, index, size, offset, mask = centre_targets(boxes, cells, stride, cfg.sigma_scale)
        far = 1.0 if negative else cfg.far_weight
        weight = negative_weights(boxes, inside, stride, cfg.near, far)
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
