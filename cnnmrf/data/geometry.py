"""Pure geometry: affine transforms between original-image, model-input and heatmap pixel coordinates.

Convention: a point (x, y) is in pixels with the centre of pixel (column i, row j) at (i, j). A transform is a
(2, 3) float64 affine matrix ``A`` mapping a point ``p`` to ``A[:, :2] @ p + A[:, 2]``.
"""

from __future__ import annotations

import numpy as np


def affine_from_scale_offset(scale: float, offset_x: float, offset_y: float) -> np.ndarray:
    """Affine matrix for ``p -> scale * p + offset``."""
    return np.array([[scale, 0.0, offset_x], [0.0, scale, offset_y]], dtype=np.float64)


def crop_transform(
    box: np.ndarray | tuple[float, float, float, float], input_size: int, crop_scale: float
) -> np.ndarray:
    """Original-image -> model-input transform of a square crop around a torso box.

    The crop is centred on the box centre and its side is ``crop_scale`` times the box height (FLIC torso boxes
    all have a 2:3 aspect ratio), scaled to ``input_size`` pixels.

    Args:
        box: torso box ``(x1, y1, x2, y2)`` in original-image pixels.
        input_size: side of the square model input, in pixels.
        crop_scale: crop side divided by the torso box height.

    Returns:
        (2, 3) affine matrix, original-image pixels -> model-input pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = crop_scale * max(y2 - y1, 1e-3)
    scale = input_size / side
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    # The box centre lands on the centre of the input, (input_size - 1) / 2.
    centre = (input_size - 1) / 2.0
    return affine_from_scale_offset(scale, centre - scale * cx, centre - scale * cy)


MAX_BOX_SCALE = 10.0  # a torso box may be at most this many times as tall as its image's larger side


def box_problem(box: np.ndarray, image_size: tuple[int, int] | None = None) -> str:
    """Why a torso box cannot centre a crop, or "" if it can.

    A box must be four finite numbers with ``x1 < x2``, ``y1 < y2`` and a height of at least 2 pixels; given the
    (width, height) of its image, its centre must lie in the image and it may be at most :data:`MAX_BOX_SCALE` times
    as tall as the image's larger side.

    Args:
        box: ``(x1, y1, x2, y2)`` in original-image pixels.
        image_size: the image's (width, height), when known.
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    text = ",".join(f"{v:g}" for v in box)
    if box.shape != (4,) or not np.isfinite(box).all():
        return f"torso box {text} is not four finite numbers"
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        return f"torso box {text} must have x1 < x2 and y1 < y2"
    if y2 - y1 < 2:
        return f"torso box {text} is less than 2 pixels tall"
    if image_size is not None:
        width, height = image_size
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if not (0 <= cx <= width and 0 <= cy <= height):
            return f"torso box {text} lies outside the {width}x{height} image"
        if y2 - y1 > MAX_BOX_SCALE * max(width, height):
            return f"torso box {text} is more than {MAX_BOX_SCALE:g} times as tall as the {width}x{height} image"
    return ""


def apply_affine(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (..., 2, 3) transforms to (..., 2) points; leading dimensions broadcast ((N, 1, 2, 3) with (N, K, 2))."""
    transform = np.asarray(transform, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,...j->...i", transform[..., :2], points) + transform[..., 2]


def invert_affine(transform: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affine transforms."""
    linear = np.linalg.inv(transform[..., :2])
    return np.concatenate([linear, -linear @ transform[..., 2:]], axis=-1)


def compose_affine(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Transform that applies ``first`` then ``second``."""
    linear = second[:, :2] @ first[:, :2]
    return np.concatenate([linear, (second[:, :2] @ first[:, 2:]) + second[:, 2:]], axis=1)


def augmentation_transform(
    input_size: int, scale: float, rotation_deg: float, flip: bool, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Model-input -> model-input transform: scale and rotate about the centre, shift, then optionally mirror.

    Args:
        input_size: side of the square model input.
        scale: zoom factor (> 1 enlarges the person).
        rotation_deg: counter-clockwise rotation in degrees, as seen on screen.
        flip: mirror horizontally (the caller must also swap left/right joint labels).
        shift: translation in pixels applied after scaling and rotation.
    """
    c = (input_size - 1) / 2.0
    theta = np.deg2rad(rotation_deg)
    # y points down, so a counter-clockwise rotation on screen is a clockwise one in (x, y).
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([c, c]) - linear @ np.array([c, c]) + np.asarray(shift, dtype=np.float64)
    transform = np.concatenate([linear, offset[:, None]], axis=1)
    if flip:
        mirror = np.array([[-1.0, 0.0, input_size - 1.0], [0.0, 1.0, 0.0]])
        transform = compose_affine(mirror, transform)
    return transform


def input_to_heatmap(points: np.ndarray, stride: int) -> np.ndarray:
    """Model-input pixels -> heatmap pixels for a network of the given output stride."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / stride - 0.5


def heatmap_to_input(points: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap pixels -> model-input pixels (inverse of :func:`input_to_heatmap`)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * stride - 0.5


def pil_affine_data(transform: np.ndarray) -> tuple[float, ...]:
    """Coefficients for ``PIL.Image.transform(..., Image.AFFINE, data)`` that render a source image through
    ``transform`` (source pixels -> output pixels).

    PIL samples output pixel (x, y) at source position ``(a x + b y + c, d x + e y + f)`` in continuous
    coordinates where pixel centres sit at +0.5; this converts from the integer-centre convention used here.
    """
    inverse = invert_affine(transform)  # output -> source, integer-centre convention
    linear, offset = inverse[:, :2], inverse[:, 2]
    # continuous = integer + 0.5 on both sides: src_c = L (out_c - 0.5) + t + 0.5
    offset_c = offset + 0.5 - linear @ np.array([0.5, 0.5])
    return (linear[0, 0], linear[0, 1], offset_c[0], linear[1, 0], linear[1, 1], offset_c[1])
