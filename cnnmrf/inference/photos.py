"""Pose on photos: decode, take the given torso box or search for the person, crop, run the model, save the result."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.geometry import box_problem, crop_transform
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.data.images import decode_image, render
from cnnmrf.devices import Precision, autocast, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_write_files
from cnnmrf.inference.crops import Joints, final_joints, predict_crops
from cnnmrf.inference.drawing import draw_pose
from cnnmrf.inference.search import PersonHypothesis, SearchConfig, box_from_joints, find_person
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import load_pose
from cnnmrf.models.pose import PoseModel


def check_box(box: np.ndarray, size: tuple[int, int]) -> None:
    """A torso box must be finite, have its centre inside the (width, height) image, be at least 2 pixels tall and at
    most ten times as tall as the image (see :func:`cnnmrf.data.geometry.box_problem`).

    Raises:
        CnnmrfError: it does not.
    """
    problem = box_problem(box, size)
    if problem:
        raise CnnmrfError(problem.removeprefix("torso "))


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes.

    Raises:
        CnnmrfError: missing, a folder, or unreadable.
    """
    if not path.exists():
        raise CnnmrfError("no such file")
    if not path.is_file():
        raise CnnmrfError("not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise CnnmrfError(f"cannot read it ({err.strerror or err})") from err


def peek_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding, or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def load_image(data: bytes, target_scale: float = 1.0) -> tuple[Image.Image, float]:
    """Decode to RGB (grey, palette, RGBA... converted), upright per the EXIF orientation, letting JPEGs decode
    smaller when ``target_scale`` < 1.

    Returns:
        The image and its decode factor (original pixels per decoded pixel).

    Raises:
        CnnmrfError: not a readable image, truncated, or larger than ``cnnmrf.data.images.MAX_PIXELS``.
    """
    try:
        return decode_image(data, target_scale=min(1.0, target_scale), exif_orientation=True)
    except ValueError as err:
        raise CnnmrfError(str(err)) from err


@dataclass
class PosePrediction:
    """Joints of the person in one photo, in original-image pixels."""

    file: str
    image_size: tuple[int, int]  # (width, height) of the original image
    box: np.ndarray  # (4,) torso box x1, y1, x2, y2
    box_source: str  # "given" (--box) or "search"
    joints: np.ndarray  # (K, 2) (x, y), clipped to the image
    scores: np.ndarray  # (K,) peak score of each joint's map (logit or log-belief; higher is better)
    search_score: float | None = None  # the person search's hypothesis score

    def to_dict(self) -> dict[str, Any]:
        """JSON form: file, image_size, box, box_source, search_score, joints {name: [x, y]}, scores {name: s}."""
        return {
            "file": self.file,
            "image_size": list(self.image_size),
            "box": [round(float(v), 2) for v in self.box],
            "box_source": self.box_source,
            "search_score": None if self.search_score is None else round(self.search_score, 4),
            "joints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(JOINT_NAMES, self.joints)},
            "scores": {n: round(float(s), 4) for n, s in zip(JOINT_NAMES, self.scores)},
        }


@dataclass
class PosePredictor:
    """A loaded pose model with its crop geometry, ready to run on photos."""

    model: PoseModel
    preprocess: PreprocessConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    use_spatial: bool = True  # run the spatial model (if the model has one)
    flip_test: bool = False  # average with the mirrored crop
    search: SearchConfig = field(default_factory=SearchConfig)
    dtype: torch.dtype = torch.float32  # the detector's arithmetic: float32 or bfloat16 (autocast)

    @classmethod
    def from_checkpoint(
        cls, path: Path, device: str = "auto", precision: Precision | str = Precision.auto, **options: Any
    ) -> PosePredictor:
        """Load a checkpoint (its model and crop geometry) onto ``device``; ``options`` set the other fields.

        Raises:
            CnnmrfError: missing or foreign checkpoint, or one without crop geometry.
        """
        model, prep = load_pose(path)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev).dtype
        return cls(model.to(dev), prep, dev, dtype=dtype, **options)

    @property
    def torso_px(self) -> float:
        """Torso-box height in model-input pixels the model was trained on."""
        return self.preprocess.input_size / self.preprocess.crop_scale

    def find_person(self, image: Image.Image, decode_factor: float = 1.0) -> PersonHypothesis:
        """The best person hypothesis in a photo (see :func:`find_person`)."""
        with autocast(self.device, self.dtype):
            return find_person(self.model.detector, image, self.torso_px, decode_factor, self.search, self.device)

    def predict_images(
        self,
        images: Sequence[tuple[Image.Image, float]],
        boxes: Sequence[np.ndarray | None],
        files: Sequence[str] | None = None,
    ) -> list[PosePrediction]:
        """Predict a batch of photos: search a person where no box is given, one forward pass over the crops, then
        for searched photos re-fit the box to the predicted torso (:func:`box_from_joints`) and predict again,
        ``search.refine_steps`` times.

        Args:
            images: (image, decode factor) pairs from :func:`load_image`.
            boxes: one torso box (original pixels) or None (search) per image.
            files: names recorded in the predictions.

        Raises:
            CnnmrfError: a given box lies outside its image.
        """
        files = list(files) if files is not None else [""] * len(images)
        hypotheses: list[PersonHypothesis | None] = []
        current: list[np.ndarray] = []  # the torso box of each image, (4,) original pixels
        sizes: list[tuple[int, int]] = []
        for (image, factor), box in zip(images, boxes, strict=True):
            original = (round(image.size[0] * factor), round(image.size[1] * factor))
            sizes.append(original)
            if box is None:
                hypotheses.append(self.find_person(image, factor))
                current.append(hypotheses[-1].box)
            else:
                check_box(box, original)
                hypotheses.append(None)
                current.append(np.asarray(box, dtype=np.float64))
        final = self._predict_boxes(images, current)
        searched = [i for i, hyp in enumerate(hypotheses) if hyp is not None]
        for _ in range(self.search.refine_steps if searched else 0):
            # The search's scale and position are coarse: re-fit each found box to its predicted torso, predict again.
            for i in searched:
                current[i] = box_from_joints(final.joints[i], current[i], sizes[i])
            again = self._predict_boxes([images[i] for i in searched], [current[i] for i in searched])
            final.joints[searched], final.scores[searched] = again.joints, again.scores
        limits = np.array(sizes, dtype=np.float64)[:, None, :] - 1  # (B, 1, 2)
        joints = np.clip(final.joints, 0, np.maximum(limits, 0))  # (B, K, 2)
        return [
            PosePrediction(
                file, original, box, "given" if hyp is None else "search", j, s, None if hyp is None else hyp.score
            )
            for file, original, box, hyp, j, s in zip(files, sizes, current, hypotheses, joints, final.scores)
        ]

    def _predict_boxes(self, images: Sequence[tuple[Image.Image, float]], boxes: Sequence[np.ndarray]) -> Joints:
        """Crop each image around its torso box and run the model on all crops in one batch."""
        size = self.preprocess.input_size
        crops, transforms = [], []
        for (image, factor), box in zip(images, boxes, strict=True):
            transform = crop_transform(box, size, self.preprocess.crop_scale)  # (2, 3) original -> input
            source, source_factor = _prefiltered(image, factor, transform[0, 0])
            crops.append(render(source, transform, size, source_factor))  # (S, S, 3)
            transforms.append(transform)
        sets = predict_crops(
            self.model,
            np.stack(crops),
            np.stack(transforms),
            self.device,
            use_spatial=self.use_spatial,
            flip_test=self.flip_test,
            decoder=Decoder(sigma=self.preprocess.heatmap_sigma),
            dtype=self.dtype,
        )
        return final_joints(sets)

    def predict_image(
        self, image: Image.Image, decode_factor: float = 1.0, box: np.ndarray | None = None, file: str = ""
    ) -> PosePrediction:
        """Predict one decoded photo (person search unless ``box`` is given)."""
        return self.predict_images([(image, decode_factor)], [box], [file])[0]

    def predict_file(
        self, path: Path, box: np.ndarray | None = None, full_resolution: bool = False
    ) -> tuple[PosePrediction, Image.Image]:
        """Predict one image file: read, decode (JPEGs only as finely as the model needs), search or crop, predict.

        Args:
            path: image file (any format PIL reads).
            box: torso box in original pixels, or None to search for the person.
            full_resolution: decode at full size (for drawing) even when a smaller decode would do.

        Returns:
            The prediction and the decoded image.

        Raises:
            CnnmrfError: a missing, unreadable, truncated or absurdly large image, or a box outside it.
        """
        data = read_image_bytes(Path(path))
        target = 1.0
        header = None if full_resolution else peek_size(data)
        if header is not None:
            # min(header): the EXIF orientation may swap the stored axes
            torso = (box[3] - box[1]) if box is not None else self.search.min_fraction * min(header)
            target = self.torso_px / max(float(torso), 1.0)
        image, factor = load_image(data, target)
        return self.predict_image(image, factor, box, str(path)), image


def _prefiltered(image: Image.Image, factor: float, scale: float) -> tuple[Image.Image, float]:
    """Box-filter the image down by an integer factor when the crop shrinks it 2x or more (as a JPEG draft decode
    does for the training crops), so the bilinear crop does not alias. Returns the image and its decode factor."""
    n = int(1.0 / (scale * factor)) if scale * factor < 0.5 else 1  # decoded pixels per model-input pixel
    return (image.reduce(n), factor * n) if n >= 2 else (image, factor)


def save_prediction(prediction: PosePrediction, image: Image.Image, json_path: Path, png_path: Path) -> None:
    """Write the prediction as JSON (:meth:`PosePrediction.to_dict`) and the photo with its skeleton drawn as PNG, as
    one consistent pair: both are made in memory, then written together (:func:`cnnmrf.files.atomic_write_files`).

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
    draw_pose(image, prediction.joints).save(buffer, format="PNG")
    atomic_write_files({png_path: buffer.getvalue(), json_path: document.encode()})
