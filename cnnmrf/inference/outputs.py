"""What `predict` writes: the per-image JSON document (versioned, see docs/prediction-format.md) and the drawn PNG."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_write_files
from cnnmrf.inference.drawing import draw_pose
from cnnmrf.inference.search import Source
from cnnmrf.joints import JOINT_NAMES

PREDICTION_FORMAT = "cnnmrf-prediction-v2"  # the per-image JSON (docs/prediction-format.md)


@dataclass
class Person:
    """One person found in a photo; positions in original-image pixels."""

    box: np.ndarray  # (4,) torso box x1, y1, x2, y2
    source: Source  # where the box came from: "given" (--box), "scan", "face" or "detector"
    joints: np.ndarray  # (K, 2) (x, y), clipped to the image
    peaks: np.ndarray  # (K,) raw peak score of each joint's map (logit or log-belief; higher is better)
    score: float | None  # calibrated P(the box holds a person); None without a calibrated checkpoint
    joint_scores: np.ndarray | None  # (K,) calibrated P(joint within 0.1 torso lengths); None without calibration

    def to_dict(self) -> dict[str, Any]:
        """JSON form: box, score, source, joints {name: [x, y]}, joint_scores {name: p} (see docs)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": None if self.score is None else round(float(self.score), 4),
            "source": self.source,
            "joints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(JOINT_NAMES, self.joints)},
            "joint_scores": None
            if self.joint_scores is None
            else {n: round(float(p), 4) for n, p in zip(JOINT_NAMES, self.joint_scores)},
        }


@dataclass
class ImagePrediction:
    """The people found in one photo, likeliest first (empty: nobody found)."""

    file: str
    image_size: tuple[int, int]  # (width, height) of the original image
    people: list[Person]
    precision: str = "fp32"  # the person search's arithmetic, fp32 or bf16 (people are scored in fp32 either way)
    search: str = "scan"  # how people were proposed: "scan" (part detector's scan and faces) or "detector"

    def to_dict(self) -> dict[str, Any]:
        """JSON form: format, file, image_size, precision, search, people (see :meth:`Person.to_dict`)."""
        return {
            "format": PREDICTION_FORMAT,
            "file": self.file,
            "image_size": list(self.image_size),
            "precision": self.precision,
            "search": self.search,
            "people": [person.to_dict() for person in self.people],
        }


def save_prediction(prediction: ImagePrediction, image: Image.Image, json_path: Path, png_path: Path) -> None:
    """Write the prediction as JSON (:meth:`ImagePrediction.to_dict`) and the photo with its people's skeletons drawn
    as PNG (the photo alone when nobody was found), as one consistent pair: both are made in memory, then written
    together (:func:`cnnmrf.files.atomic_write_files`).

    Args:
        prediction: the prediction.
        image: the photo, at original resolution (decode factor 1).
        json_path: the JSON file to write (its folder is created).
        png_path: the PNG file to write.

    Raises:
        CnnmrfError: the prediction is not finite (a damaged model), or the files cannot be written (disk full).
    """
    try:
        document = json.dumps(prediction.to_dict(), indent=1, allow_nan=False) + "\n"
    except ValueError as err:
        raise CnnmrfError(
            "the model predicted non-finite joints (NaN or infinity); is the checkpoint damaged?"
        ) from err
    buffer = io.BytesIO()
    joints = np.array([person.joints for person in prediction.people]).reshape(-1, len(JOINT_NAMES), 2)  # (P, K, 2)
    draw_pose(image, joints).save(buffer, format="PNG", compress_level=1)  # vs. level 6: 3x faster, 10% larger
    atomic_write_files({png_path: buffer.getvalue(), json_path: document.encode()})
