"""Whole FLIC frames and person-free photos for measuring the person search: who is where, and what holds nobody."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnmrf.data.flic import FlicSource, one_box_per_person
from cnnmrf.data.format import read_split
from cnnmrf.data.images import decode_image
from cnnmrf.errors import CnnmrfError


@dataclass
class Frame:
    """A FLIC frame and every annotated person in it (original pixels)."""

    file: str
    boxes: np.ndarray  # (P, 4) torso boxes
    joints: np.ndarray  # (P, K, 2)


def split_frames(data: Path, split: str, rows: np.ndarray) -> list[Frame]:
    """The distinct frames of ``rows`` of a split, each with all its annotated people in that split, one box per person
    (FLIC's twice-annotated people merged: :func:`one_box_per_person`)."""
    table = read_split(data, split, ("file", "torsobox", "joints"))
    files = np.asarray(table["file"]).astype(str)
    wanted = dict.fromkeys(files[np.asarray(rows, dtype=np.int64)])
    frames = []
    for file in wanted:
        mine = np.flatnonzero(files == file)
        frames.append(Frame(str(file), *one_box_per_person(table["torsobox"][mine], table["joints"][mine])))
    return frames


def read_frame(flic: FlicSource, file: str) -> tuple[Image.Image, float]:
    """Read and decode a whole frame of a FLIC copy (upright as its EXIF says, as `predict` reads photos).

    Returns:
        The RGB image and its decode factor (1.0: full size).

    Raises:
        CnnmrfError: the frame is missing, unreadable or not an image, naming it.
    """
    name = f"images/{file}"
    try:
        data = flic.read_image_bytes(file)
    except FileNotFoundError:
        raise CnnmrfError(f"{flic.path} has no {name}: give the FLIC copy the dataset was made from") from None
    except OSError as err:
        raise CnnmrfError(f"cannot read {name} of {flic.path}: {err.strerror or err}") from err
    try:
        return decode_image(data, exif_orientation=True)
    except ValueError as err:
        raise CnnmrfError(f"{name} of {flic.path}: {err}") from err


def matches_person(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Whether found torso boxes are an annotated one's: centre within half its height, height within 0.7-1.43x.

    Shapes: found (N, 4), truth (P, 4) -> (N, P) bool.
    """
    found, truth = (
        np.asarray(found, dtype=np.float64).reshape(-1, 4),
        np.asarray(truth, dtype=np.float64).reshape(-1, 4),
    )
    height = truth[:, 3] - truth[:, 1]  # (P,)
    gap = np.linalg.norm(
        ((found[:, None, :2] + found[:, None, 2:]) - (truth[None, :, :2] + truth[None, :, 2:])) / 2, axis=-1
    )  # (N, P)
    ratio = (found[:, None, 3] - found[:, None, 1]) / height[None]  # (N, P)
    return (gap < 0.5 * height[None]) & (ratio > 0.7) & (ratio < 1.43)


def far_from_people(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) whether each found box's centre is over one torso height from every annotated torso box's centre."""
    found, truth = (
        np.asarray(found, dtype=np.float64).reshape(-1, 4),
        np.asarray(truth, dtype=np.float64).reshape(-1, 4),
    )
    gap = np.linalg.norm(
        ((found[:, None, :2] + found[:, None, 2:]) - (truth[None, :, :2] + truth[None, :, 2:])) / 2, axis=-1
    )  # (N, P)
    return (gap > (truth[:, 3] - truth[:, 1])[None]).all(axis=-1)


def person_free_region(size: tuple[int, int], frame: Frame, min_width: float = 0.25) -> np.ndarray | None:
    """The widest full-height strip at the left or right of a frame clear of every annotated person (their joints
    and torso boxes, widened by half a torso height), as a box (4,); None if narrower than ``min_width`` of the
    frame. Unannotated people may still be there: FLIC labels one or two people per frame."""
    width, height = size
    margin = 0.5 * (frame.boxes[:, 3] - frame.boxes[:, 1])[:, None]  # (P, 1)
    xs = np.concatenate([frame.boxes[:, [0, 2]], frame.joints[..., 0]], axis=1)  # (P, 2 + K)
    left = float(np.nanmin(xs - margin))
    right = float(np.nanmax(xs + margin))
    strips = [np.array([0.0, 0.0, max(left, 0.0), height]), np.array([min(right, width), 0.0, width, height])]
    best = max(strips, key=lambda b: b[2] - b[0])
    return best if best[2] - best[0] >= min_width * width else None


def synthetic_clutter(count: int, seed: int, size: tuple[int, int] = (480, 360)) -> list[Image.Image]:
    """Person-free photos: colour gradients under random rectangles, ellipses and lines, blurred and noisy."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        ramp = np.linspace(0, 1, size[0])[None, :, None] * rng.uniform(-80, 80, 3) + rng.uniform(40, 215, 3)
        image = Image.fromarray(np.broadcast_to(ramp, (size[1], size[0], 3)).clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(5, 40)):
            x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
            w, h = rng.uniform(5, size[0] / 2), rng.uniform(5, size[1] / 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = rng.integers(3)
            if shape == 0:
                draw.rectangle([x, y, x + w, y + h], fill=colour)
            elif shape == 1:
                draw.ellipse([x, y, x + w, y + h], fill=colour)
            else:
                draw.line([x, y, x + w, y + h], fill=colour, width=int(rng.integers(1, 12)))
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))
        noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, rng.uniform(0, 12), (size[1], size[0], 3))
        images.append(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
    return images


# scikit-image's person-free photos that calibration crops negatives from; coffee, chelsea (a cat), brick and rocket
# are kept out, for the tests (tests/test_bundled_search.py), and camera and astronaut show people.
NATURAL_NEGATIVES = (
    "grass",
    "gravel",
    "moon",
    "hubble_deep_field",
    "coins",
    "clock",
    "horse",
    "page",
    "text",
    "immunohistochemistry",
    "colorwheel",
    "logo",
)


def person_free_photos(count: int, seed: int) -> list[Image.Image]:
    """``count`` person-free photos: half :func:`synthetic_clutter`, half random crops (50-100% of each side,
    resized to a 320-512 pixel longer side) of scikit-image's person-free photos (:data:`NATURAL_NEGATIVES`)."""
    from skimage import data as samples

    rng = np.random.default_rng(seed)
    photos = synthetic_clutter(count // 2, seed)
    for _ in range(count - count // 2):
        source = Image.fromarray(getattr(samples, str(rng.choice(NATURAL_NEGATIVES)))()).convert("RGB")
        width, height = source.size
        w, h = round(width * rng.uniform(0.5, 1.0)), round(height * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        side = rng.uniform(320, 512) / max(w, h)
        photos.append(source.crop((x, y, x + w, y + h)).resize((round(w * side), round(h * side)), Image.BILINEAR))
    return photos
