"""People in photos: decode, take the given torso box or search for people, verify and score them, save the result."""

from __future__ import annotations

import io
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
from cnnmrf.inference.calibration import Calibration, person_features
from cnnmrf.inference.crops import DETECTOR, SPATIAL, Joints, final_joints, predict_crops
from cnnmrf.inference.faces import FaceGeometry, detect_faces, face_proposals
from cnnmrf.inference.outputs import ImagePrediction, Person
from cnnmrf.inference.search import (
    Proposal,
    SearchConfig,
    box_from_joints,
    merge_people,
    non_maximum_suppression,
    scan_proposals,
)
from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
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
class Candidates:
    """Torso boxes of a batch of photos that may hold people, each predicted by the full model."""

    owner: np.ndarray  # (N,) the photo each candidate belongs to
    proposals: list[Proposal]  # where each came from (its box before re-fitting)
    boxes: np.ndarray  # (N, 4) the final (re-fitted) torso boxes, original pixels
    sets: dict[str, Joints]  # per model output ("detector", "spatial"): (N, K, 2) joints and (N, K) peak scores
    faces: list[np.ndarray]  # per candidate: (M, 4) the faces found in its photo

    def features(self) -> np.ndarray:
        """(N, F) :func:`person_features` (without a spatial model the detector's output stands in for it)."""
        detector, spatial = self.sets[DETECTOR], self.sets.get(SPATIAL, self.sets[DETECTOR])
        return person_features(detector, spatial, self.boxes, self.faces)


@dataclass
class PosePredictor:
    """A loaded pose model with its crop geometry and calibration, ready to find people in photos."""

    model: PoseModel
    preprocess: PreprocessConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    use_spatial: bool = True  # report the spatial model's joints (if the model has one), else the detector's
    flip_test: bool = False  # average with the mirrored crop
    search: SearchConfig = field(default_factory=SearchConfig)
    # The person search's arithmetic, float32 or bfloat16 (autocast): the scan over the whole photo. Candidates are
    # always predicted, re-fitted and scored in float32, so people, joints and scores do not depend on it.
    dtype: torch.dtype = torch.float32
    calibration: Calibration | None = None  # person and joint score maps (None: raw scores, the best proposal only)
    min_score: float | None = None  # people below this P(person) are dropped (None: the calibration's default)
    max_people: int | None = None  # at most this many people per photo (None: all above min_score)
    face_geometry: FaceGeometry | None = None  # face -> torso box for face proposals (None: no face proposals)

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: str = "auto",
        precision: Precision | str = Precision.auto,
        calibrated: bool = True,
        **options: Any,
    ) -> PosePredictor:
        """Load a checkpoint (its model, crop geometry and, unless not ``calibrated``, its calibration) onto
        ``device``; ``options`` set the other fields.

        Raises:
            CnnmrfError: missing or foreign checkpoint, one without crop geometry, or a malformed calibration.
        """
        state = load_checkpoint(path)
        prep = preprocess_from_checkpoint(state, Path(path))
        model = model_from_checkpoint(state).eval()
        calibration = None
        if calibrated and state.get("calibration") is not None:
            try:
                calibration = Calibration.from_dict(state["calibration"])
            except ValueError as err:
                raise CnnmrfError(f"checkpoint {path}: {err}; run `cnnmrf calibrate` again") from err
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev, auto_bf16=False).dtype  # answers alike on every machine
        faces = None if calibration is None else calibration.faces
        return cls(model.to(dev), prep, dev, dtype=dtype, calibration=calibration, face_geometry=faces, **options)

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``: the person search's arithmetic (see ``dtype``), as printed and recorded."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def torso_px(self) -> float:
        """Torso-box height in model-input pixels the model was trained on."""
        return self.preprocess.input_size / self.preprocess.crop_scale

    @property
    def threshold(self) -> float:
        """The P(person) below which searched people are dropped."""
        if self.min_score is not None:
            return self.min_score
        return self.calibration.min_score if self.calibration is not None else 0.0

    def faces(self, image: Image.Image, decode_factor: float = 1.0) -> np.ndarray:
        """(M, 4) faces in a photo, original pixels (none without a face geometry or with ``search.faces`` off)."""
        if self.search.faces and self.face_geometry is not None:
            return detect_faces(image, decode_factor)
        return np.zeros((0, 4))

    def propose(
        self, image: Image.Image, decode_factor: float = 1.0, faces: np.ndarray | None = None
    ) -> list[Proposal]:
        """Torso-box proposals in a photo: the detector's scan and (with a face geometry, from a calibrated checkpoint)
        faces (:meth:`faces` unless given), the overlapping ones dropped, at most ``search.max_proposals``, faces
        first, then by scan score."""
        with autocast(self.device, self.dtype):
            found = scan_proposals(self.model.detector, image, self.torso_px, decode_factor, self.search, self.device)
        faces = self.faces(image, decode_factor) if faces is None else faces
        if self.face_geometry is not None:
            found = face_proposals(faces, self.face_geometry) + found
        if not found:
            return []
        ranked = sorted(found, key=lambda p: (p.source == "face", p.score), reverse=True)  # faces (largest) first
        kept = non_maximum_suppression(
            np.stack([p.box for p in ranked]), -np.arange(len(ranked), dtype=np.float64), self.search.proposal_overlap
        )
        return [ranked[i] for i in kept[: self.search.max_proposals]]

    def candidates(self, images: Sequence[tuple[Image.Image, float]], boxes: Sequence[np.ndarray | None]) -> Candidates:
        """Every torso box worth verifying in a batch of photos, predicted by the full model.

        Where no box is given, every :meth:`propose` box goes through the full model, is re-fitted to its predicted
        torso (:func:`box_from_joints`) and predicted again ``search.refine_steps`` times. A given box is predicted
        as it is.

        Raises:
            CnnmrfError: a given box lies outside its image.
        """
        sizes = _original_sizes(images)
        owner: list[int] = []  # the image each candidate box belongs to
        proposals: list[Proposal] = []
        faces = [self.faces(image, factor) for image, factor in images]  # (M, 4) each: proposals, and evidence
        for i, ((image, factor), box) in enumerate(zip(images, boxes, strict=True)):
            if box is None:
                found = self.propose(image, factor, faces[i])
            else:
                check_box(box, sizes[i])
                found = [Proposal(np.asarray(box, dtype=np.float64), 0.0, "given")]
            proposals += found
            owner += [i] * len(found)
        current = [p.box for p in proposals]  # (4,) each, original pixels
        sets = self._predict_boxes([images[i] for i in owner], current)
        searched = [c for c, p in enumerate(proposals) if p.source != "given"]
        for _ in range(self.search.refine_steps if searched else 0):
            # The proposals' scale and position are coarse: re-fit each box to its predicted torso, predict again.
            predicted = final_joints(sets).joints  # (N, K, 2)
            for c in searched:
                current[c] = box_from_joints(predicted[c], current[c], sizes[owner[c]])
            again = self._predict_boxes([images[owner[c]] for c in searched], [current[c] for c in searched])
            for name, joints in again.items():
                for field_now, field_again in zip(sets[name], joints):  # joints, scores, peak_mass
                    field_now[searched] = field_again
        face_boxes = [faces[i] for i in owner]
        return Candidates(
            np.array(owner, dtype=np.int64), proposals, np.array(current).reshape(-1, 4), sets, face_boxes
        )

    def predict_images(
        self,
        images: Sequence[tuple[Image.Image, float]],
        boxes: Sequence[np.ndarray | None],
        files: Sequence[str] | None = None,
    ) -> list[ImagePrediction]:
        """Find the people in a batch of photos, or predict the one person in each given torso box.

        The :meth:`candidates` are scored (calibrated P(person)) and, per photo, merged by non-maximum suppression,
        kept above :attr:`threshold` and cut to ``max_people``. A given box always gives its one person (scored, never
        dropped).

        Args:
            images: (image, decode factor) pairs from :func:`load_image`.
            boxes: one torso box (original pixels) or None (search) per image.
            files: names recorded in the predictions.

        Raises:
            CnnmrfError: a given box lies outside its image.
        """
        files = list(files) if files is not None else [""] * len(images)
        sizes = _original_sizes(images)
        found = self.candidates(images, boxes)
        people = self._people(found, sizes)
        return [
            ImagePrediction(file, size, people[i], self.precision) for i, (file, size) in enumerate(zip(files, sizes))
        ]

    def person_scores(self, found: Candidates) -> np.ndarray | None:
        """(N,) calibrated P(person) of each candidate, or None without calibration."""
        if self.calibration is None or not found.proposals:
            return None
        return self.calibration.person.probability(found.features())

    def _people(self, found: Candidates, sizes: list[tuple[int, int]]) -> list[list[Person]]:
        """Score the candidates, then per image: NMS, threshold, ``max_people``."""
        people: list[list[Person]] = [[] for _ in sizes]
        if not found.proposals:
            return people
        reported_name = SPATIAL if self.use_spatial and SPATIAL in found.sets else DETECTOR
        reported = found.sets[reported_name]
        score = self.person_scores(found)  # (N,) or None
        joint_map = None if self.calibration is None else self.calibration.joints.get(reported_name)
        joint_scores = None if joint_map is None else joint_map.probability(reported.scores)  # (N, K)
        rank = score if score is not None else reported.scores.mean(axis=-1)  # (N,) uncalibrated: mean peak
        for i, size in enumerate(sizes):
            mine = np.flatnonzero(found.owner == i)
            if len(mine) == 0:
                continue
            kept = mine[merge_people(found.boxes[mine], rank[mine], self.search)]
            if found.proposals[mine[0]].source != "given":
                # searched: keep the likely people; uncalibrated, only the best (its score has no meaning)
                kept = kept[score[kept] >= self.threshold] if score is not None else kept[:1]
            limit = np.maximum(np.asarray(size, dtype=np.float64) - 1, 0)  # (2,)
            people[i] = [
                Person(
                    clip_box(found.boxes[c], size),
                    found.proposals[c].source,
                    np.clip(reported.joints[c], 0, limit),
                    reported.scores[c],
                    None if score is None else float(score[c]),
                    None if joint_scores is None else joint_scores[c],
                )
                for c in kept[: self.max_people]
            ]
        return people

    def _predict_boxes(
        self, images: Sequence[tuple[Image.Image, float]], boxes: Sequence[np.ndarray]
    ) -> dict[str, Joints]:
        """Crop each image around its torso box and run the full model on all crops in one batch (both outputs)."""
        size = self.preprocess.input_size
        crops, transforms = [], []
        for (image, factor), box in zip(images, boxes, strict=True):
            transform = crop_transform(box, size, self.preprocess.crop_scale)  # (2, 3) original -> input
            source, source_factor = _prefiltered(image, factor, transform[0, 0])
            crops.append(render(source, transform, size, source_factor))  # (S, S, 3)
            transforms.append(transform)
        if not crops:
            return {}
        return predict_crops(
            self.model,
            np.stack(crops),
            np.stack(transforms),
            self.device,
            use_spatial=True,
            flip_test=self.flip_test,
            decoder=Decoder(sigma=self.preprocess.heatmap_sigma),
            dtype=torch.float32,  # what the scores are calibrated on: the same whatever the search's arithmetic
        )

    def predict_image(
        self, image: Image.Image, decode_factor: float = 1.0, box: np.ndarray | None = None, file: str = ""
    ) -> ImagePrediction:
        """Predict one decoded photo (person search unless ``box`` is given)."""
        return self.predict_images([(image, decode_factor)], [box], [file])[0]

    def predict_file(
        self, path: Path, box: np.ndarray | None = None, full_resolution: bool = False
    ) -> tuple[ImagePrediction, Image.Image]:
        """Predict one image file: read, decode (JPEGs only as finely as the model needs), search or crop, predict.

        Args:
            path: image file (any format PIL reads).
            box: torso box in original pixels, or None to search for people.
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


def clip_box(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (4,) x1, y1, x2, y2 box clipped to a (width, height) image's pixel centres, 0 to width - 1 and height - 1."""
    limit = np.maximum(np.asarray(size, dtype=np.float64) - 1, 0)  # (2,)
    return np.clip(box, 0, np.concatenate([limit, limit]))


def _original_sizes(images: Sequence[tuple[Image.Image, float]]) -> list[tuple[int, int]]:
    """(width, height) of each photo before its decode factor shrank it."""
    return [(round(image.size[0] * factor), round(image.size[1] * factor)) for image, factor in images]


def _prefiltered(image: Image.Image, factor: float, scale: float) -> tuple[Image.Image, float]:
    """Box-filter the image down by an integer factor when the crop shrinks it 2x or more (as a JPEG draft decode
    does for the training crops), so the bilinear crop does not alias. Returns the image and its decode factor."""
    n = int(1.0 / (scale * factor)) if scale * factor < 0.5 else 1  # decoded pixels per model-input pixel
    return (image.reduce(n), factor * n) if n >= 2 else (image, factor)
