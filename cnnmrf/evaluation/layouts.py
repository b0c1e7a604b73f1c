"""Photos framed unlike FLIC, built from its frames: one shrunk into a canvas of its size, or several tiled in one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

FILL = (114, 114, 114)  # the canvas around and between the frames: flat grey


@dataclass
class Layout:
    """A built photo and every annotated person of the frames in it, mapped into its pixels.

    Pixel centres at integer coordinates, as everywhere in cnnmrf (``docs/data-format.md``).
    """

    image: Image.Image  # the canvas, RGB
    boxes: np.ndarray  # (P, 4) torso boxes x1, y1, x2, y2, canvas pixels
    joints: np.ndarray  # (P, K, 2) joints, canvas pixels (NaN stays NaN)
    source: np.ndarray  # (P,) int: which of the given frames each person came from
    scale: np.ndarray  # (P,) canvas pixels per original pixel, vertically: how much each person was shrunk


@dataclass
class Piece:
    """One frame's place in a canvas: shrunk to ``size`` (width, height) pixels, its top-left pixel at ``offset``."""

    size: tuple[int, int]
    offset: tuple[int, int]


def shrunk_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(width, height) of an image of ``size`` shrunk by ``factor`` in (0, 1], each side rounded, at least 1 pixel.

    Raises:
        ValueError: ``factor`` outside (0, 1].
    """
    if not 0 < factor <= 1:
        raise ValueError(f"a shrink factor lies in (0, 1], not {factor}")
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def map_points(points: np.ndarray, size: tuple[int, int], piece: Piece) -> np.ndarray:
    """Points of an image of ``size`` (width, height) where they land once it is resized to ``piece.size`` and pasted
    at ``piece.offset``: per axis ``(p + 0.5) * s - 0.5 + o``, ``s`` the new side over the old (pixel edges map onto
    pixel edges, as PIL resizes).

    Shapes: points (..., 2) -> (..., 2).
    """
    scale = np.asarray(piece.size, dtype=np.float64) / np.asarray(size, dtype=np.float64)  # (2,)
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5 + np.asarray(piece.offset, dtype=np.float64)


def compose(
    frames: Sequence[tuple[Image.Image, np.ndarray, np.ndarray]],
    pieces: Sequence[Piece],
    canvas: tuple[int, int],
    fill: tuple[int, int, int] = FILL,
) -> Layout:
    """Paste each frame, resized (area-averaged: PIL's box filter) to its piece's size, into a ``fill``-coloured
    canvas, and map its people's torso boxes and joints along (:func:`map_points`; box corners as points).

    Args:
        frames: (image, (P_i, 4) torso boxes, (P_i, K, 2) joints) per frame, original pixels.
        pieces: where each frame goes, one per frame.
        canvas: (width, height) of the photo built.
        fill: RGB colour of the canvas where no frame lies.

    Returns:
        The :class:`Layout`, people in the frames' order.
    """
    image = Image.new("RGB", canvas, fill)
    boxes, joints, source, scale = [], [], [], []
    for index, ((frame, frame_boxes, frame_joints), piece) in enumerate(zip(frames, pieces, strict=True)):
        size = frame.size
        image.paste(frame.convert("RGB").resize(piece.size, Image.BOX), piece.offset)
        frame_boxes = np.asarray(frame_boxes, dtype=np.float64).reshape(-1, 2, 2)  # corners as points
        boxes.append(map_points(frame_boxes, size, piece).reshape(-1, 4))
        joints.append(map_points(frame_joints, size, piece))
        source.append(np.full(len(frame_boxes), index))
        scale.append(np.full(len(frame_boxes), piece.size[1] / size[1]))
    k = np.shape(frames[0][2])[1] if frames else 0
    return Layout(
        image,
        np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        np.concatenate(joints) if joints else np.zeros((0, k, 2)),
        np.concatenate(source).astype(np.int64) if source else np.zeros(0, np.int64),
        np.concatenate(scale) if scale else np.zeros(0),
    )


def padded(
    image: Image.Image,
    boxes: np.ndarray,
    joints: np.ndarray,
    factor: float,
    rng: np.random.Generator,
    fill: tuple[int, int, int] = FILL,
) -> Layout:
    """A frame shrunk by ``factor`` (in (0, 1]; each side rounded) and pasted at a random place (top-left pixel drawn
    uniformly among the integer positions that keep it whole) in a canvas of the frame's own size.

    Args:
        image: the frame.
        boxes: (P, 4) its annotated people's torso boxes, original pixels.
        joints: (P, K, 2) their joints, original pixels.
        factor: the shrink factor (1: the frame as it is).
        rng: draws the place.
        fill: RGB colour of the canvas around the frame.

    Raises:
        ValueError: ``factor`` outside (0, 1].
    """
    size = shrunk_size(image.size, factor)
    offset = (int(rng.integers(0, image.size[0] - size[0] + 1)), int(rng.integers(0, image.size[1] - size[1] + 1)))
    return compose([(image, boxes, joints)], [Piece(size, offset)], image.size, fill)


def tiled(
    frames: Sequence[tuple[Image.Image, np.ndarray, np.ndarray]],
    grid: int,
    canvas: tuple[int, int] | None = None,
    fill: tuple[int, int, int] = FILL,
) -> Layout:
    """Up to ``grid`` x ``grid`` frames tiled into one canvas, row by row: the canvas is cut into cells at
    ``round(i * side / grid)``, each frame shrunk by the largest factor that fits its cell (each side rounded) and
    centred in it (offsets rounded down); cells without a frame stay ``fill``.

    Args:
        frames: (image, (P_i, 4) torso boxes, (P_i, K, 2) joints) per frame, original pixels.
        grid: cells per row and per column.
        canvas: (width, height) of the photo built; default: the first frame's size.
        fill: RGB colour of the canvas around and between the frames.

    Raises:
        ValueError: more frames than cells, none, or ``grid`` below 1.
    """
    if grid < 1 or not 0 < len(frames) <= grid * grid:
        raise ValueError(f"a {grid}x{grid} grid holds 1 to {max(grid, 0) ** 2} frames, not {len(frames)}")
    width, height = canvas if canvas is not None else frames[0][0].size
    xs = [round(i * width / grid) for i in range(grid + 1)]
    ys = [round(i * height / grid) for i in range(grid + 1)]
    pieces = []
    for index, (image, _, _) in enumerate(frames):
        row, column = divmod(index, grid)
        cell = (xs[column + 1] - xs[column], ys[row + 1] - ys[row])
        size = shrunk_size(image.size, min(1.0, cell[0] / image.size[0], cell[1] / image.size[1]))
        size = (min(size[0], cell[0]), min(size[1], cell[1]))
        pieces.append(Piece(size, (xs[column] + (cell[0] - size[0]) // 2, ys[row] + (cell[1] - size[1]) // 2)))
    return compose(frames, pieces, (width, height), fill)
