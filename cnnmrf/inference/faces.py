"""Face proposals for the person search: scikit-image's LBP frontal-face cascade, and the face-to-torso geometry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from cnnmrf.inference.search import BOX_ASPECT, Proposal


@dataclass(frozen=True)
class FaceConfig:
    """How the cascade looks for faces (speed against recall: each step finer costs ~2-3x the time)."""

    max_side: int = 320  # the photo is shrunk so its longer side is at most this many pixels before the scan
    min_size: int = 18  # smallest face searched, pixels of the shrunk photo (FLIC's faces: ~20-50 at 320)
    scale_factor: float = 1.25  # step between the window sizes scanned
    step_ratio: float = 1.5  # window stride, in units of the cascade's minimal stride (1: densest)
    min_neighbours: int = 2  # overlapping detections needed to report a face (fewer: more faces, more false ones)


@dataclass(frozen=True)
class FaceGeometry:
    """Where the torso box lies relative to a detected face, in face widths (fitted on FLIC by `cnnmrf calibrate`)."""

    offset_x: float = 0.0  # torso-box centre minus face centre, x, in face widths
    offset_y: float = 2.3  # torso-box centre minus face centre, y (down), in face widths
    height: float = 2.9  # torso-box height, in face widths

    def to_dict(self) -> dict[str, float]:
        """Plain-JSON form (stored in a checkpoint's calibration)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: float(data[k]) for k in ("offset_x", "offset_y", "height")})

    def torso(self, faces: np.ndarray) -> np.ndarray:
        """Torso boxes implied by face boxes. Shapes: (N, 4) x1, y1, x2, y2 -> (N, 4)."""
        faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
        size = faces[:, 2] - faces[:, 0]  # (N,)
        cx = (faces[:, 0] + faces[:, 2]) / 2 + self.offset_x * size
        cy = (faces[:, 1] + faces[:, 3]) / 2 + self.offset_y * size
        half_h = self.height * size / 2  # (N,)
        half_w = BOX_ASPECT * half_h
        return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)  # (N, 4)


def fit_face_geometry(faces: np.ndarray, torso_boxes: np.ndarray) -> FaceGeometry:
    """The median face-to-torso geometry of matched (face, torso box) pairs. Shapes: (N, 4), (N, 4), N >= 1."""
    faces, torsos = np.asarray(faces, dtype=np.float64), np.asarray(torso_boxes, dtype=np.float64)
    size = faces[:, 2] - faces[:, 0]  # (N,)
    offset = ((torsos[:, :2] + torsos[:, 2:]) - (faces[:, :2] + faces[:, 2:])) / 2 / size[:, None]  # (N, 2)
    height = (torsos[:, 3] - torsos[:, 1]) / size  # (N,)
    return FaceGeometry(float(np.median(offset[:, 0])), float(np.median(offset[:, 1])), float(np.median(height)))


@cache
def _cascade() -> Any:
    """scikit-image's LBP frontal-face cascade, loaded once per process."""
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    return Cascade(lbp_frontal_face_cascade_filename())


def detect_faces(image: Image.Image, decode_factor: float = 1.0, config: FaceConfig | None = None) -> np.ndarray:
    """Frontal faces in a photo.

    Args:
        image: the RGB photo, decoded with ``decode_factor`` (original pixels per decoded pixel).
        decode_factor: original pixels per decoded pixel.
        config: the cascade's settings (default :class:`FaceConfig`).

    Returns:
        (N, 4) face boxes x1, y1, x2, y2 in original pixels, largest first.
    """
    config = config or FaceConfig()
    shrink = min(1.0, config.max_side / max(image.size))
    size = (max(1, round(image.size[0] * shrink)), max(1, round(image.size[1] * shrink)))
    grey = np.asarray(image.convert("L").resize(size, Image.BILINEAR), dtype=np.float32) / 255.0  # (h, w)
    if min(size) < config.min_size:
        return np.zeros((0, 4))
    found = _cascade().detect_multi_scale(
        grey,
        scale_factor=config.scale_factor,
        step_ratio=config.step_ratio,
        min_size=(config.min_size, config.min_size),
        max_size=(min(size), min(size)),
        min_neighbor_number=config.min_neighbours,
    )
    boxes = np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found], dtype=np.float64)
    boxes = boxes.reshape(-1, 4) * (decode_factor / shrink)  # (N, 4) original pixels
    return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]), kind="stable")]


def face_proposals(faces: np.ndarray, geometry: FaceGeometry) -> list[Proposal]:
    """One torso-box proposal per face, scored by face size rank (the largest face first)."""
    return [Proposal(box, -float(rank), "face") for rank, box in enumerate(geometry.torso(faces))]
