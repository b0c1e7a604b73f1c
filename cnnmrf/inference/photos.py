"""People in photos, the front of `predict`'s pipeline: decode a photo, take the given torso box or propose boxes
(:mod:`cnnmrf.inference.proposals`), predict the pose in them (:mod:`cnnmrf.inference.topdown`), score and select the
people (:mod:`cnnmrf.inference.people`)."""

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
from cnnmrf.data.geometry import box_problem
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.data.images import decode_image
from cnnmrf.devices import Precision, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.inference.calibration import Calibration
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import DETECTOR, SPATIAL
from cnnmrf.inference.faces import FaceGeometry, detect_faces
from cnnmrf.inference.outputs import ImagePrediction, Person
from cnnmrf.inference.people import Scorer, select_people
from cnnmrf.inference.proposals import (
    DetectorSearchConfig,
    PersonDetectorSearch,
    PersonSearch,
    Photo,
    ProposalSource,
    original_size,
)
from cnnmrf.inference.search import Proposal, SearchConfig
from cnnmrf.inference.topdown import Candidates, TopDown
from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from cnnmrf.models.person import PersonDetector
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
class PosePredictor:
    """A loaded pose model with its crop geometry and calibration, ready to find people in photos: a thin front over
    the pipeline's parts, built from its fields (:attr:`person_search`, :attr:`top_down`, :attr:`scorer`, then
    :func:`select_people`)."""

    model: PoseModel
    preprocess: PreprocessConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    use_spatial: bool = True  # report the spatial model's joints (if the model has one), else the detector's
    flip_test: bool = False  # average with the mirrored crop
    search: SearchConfig = field(default_factory=SearchConfig)  # the search, re-fits and merges: the defaults
    # The person search's arithmetic, float32 or bfloat16 (autocast): the scan over the whole photo. Candidates are
    # always predicted, re-fitted and scored in float32, so people, joints and scores do not depend on it.
    dtype: torch.dtype = torch.float32
    calibration: Calibration | None = None  # person and joint score maps (None: raw scores, the best proposal only)
    min_score: float | None = None  # people below this P(person) are dropped (None: the calibration's default)
    max_people: int | None = None  # at most this many people per photo (None: all above min_score)
    face_geometry: FaceGeometry | None = None  # face -> torso box for face proposals (None: no face proposals)
    person: PersonDetector | None = None  # the learned person detector, eval mode on device (None: the scan)
    person_config: DetectorSearchConfig = field(default_factory=DetectorSearchConfig)  # its boxes kept and pruning
    proposals: ProposalSource | None = None  # any other source of searched photos' torso boxes (overrides the two)

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: str = "auto",
        precision: Precision | str = Precision.auto,
        calibrated: bool = True,
        person: PersonDetector | None = None,
        **options: Any,
    ) -> PosePredictor:
        """Load a checkpoint (its model, crop geometry and, unless not ``calibrated``, its calibration) onto
        ``device``; ``person``, a person detector (:func:`cnnmrf.models.person.person_detector_from`), proposes the
        boxes instead of the scan (:class:`PersonDetectorSearch`, moved to ``device``, in ``precision``, with the
        calibration's face geometry); ``options`` set the other fields.

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
        if person is not None:
            options["person"] = person.eval().to(dev)
        return cls(model.to(dev), prep, dev, dtype=dtype, calibration=calibration, face_geometry=faces, **options)

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``: the person search's arithmetic (see ``dtype``), as printed and recorded."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def search_name(self) -> str:
        """How people are proposed, as printed and recorded: ``scan`` (:class:`PersonSearch`), ``detector``
        (:class:`PersonDetectorSearch`), else the source's ``name`` (``custom`` without one)."""
        return str(getattr(self.person_search, "name", "custom"))

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

    @property
    def crop_config(self) -> InferenceConfig:
        """How every candidate box is predicted: float32 and both outputs whatever ``dtype`` (the scores are calibrated
        on exactly this), flipped with ``flip_test``, decoded with the model's target sigma."""
        decoder = Decoder(sigma=self.preprocess.heatmap_sigma)
        return InferenceConfig(use_spatial=True, flip_test=self.flip_test, decoder=decoder, dtype=torch.float32)

    @property
    def person_search(self) -> ProposalSource:
        """The proposal source: ``proposals`` if given, else the person detector (:class:`PersonDetectorSearch`) with a
        ``person`` detector, else the scan and faces (:class:`PersonSearch`); faces through ``face_geometry``."""
        if self.proposals is not None:
            return self.proposals
        geometry = self.face_geometry
        if self.person is not None:
            return PersonDetectorSearch(self.person, self.device, self.person_config, self.dtype, geometry)
        return PersonSearch(self.model.detector, self.torso_px, self.device, self.search, self.dtype, geometry)

    @property
    def top_down(self) -> TopDown:
        """The top-down runner: :attr:`crop_config` crops, ``search.refine_steps`` re-fits (none of a given box, a
        video track's, or the person detector's unless ``person_config.refine``)."""
        exact = (
            {"given", "track"} if self.person is None or self.person_config.refine else {"given", "track", "detector"}
        )
        return TopDown(
            self.model, self.preprocess, self.device, self.crop_config, self.search.refine_steps, frozenset(exact)
        )

    @property
    def scorer(self) -> Scorer:
        """The calibration's person and joint probabilities."""
        return Scorer(self.calibration)

    def photo(self, image: Image.Image, decode_factor: float = 1.0) -> Photo:
        """A decoded photo with its (M, 4) faces in original pixels (proposals, and evidence for the person score):
        found only where the search proposes faces (``person_config.faces`` with a person detector, else
        ``search.faces``) and a face geometry is known; else none (28 ms a 720x480 photo saved)."""
        faces = np.zeros((0, 4))
        proposes_faces = self.person_config.faces if self.person is not None else self.search.faces
        if proposes_faces and self.face_geometry is not None:
            faces = detect_faces(image, decode_factor)
        return Photo(image, decode_factor, faces)

    def candidates(self, images: Sequence[tuple[Image.Image, float]], boxes: Sequence[np.ndarray | None]) -> Candidates:
        """Every torso box worth verifying in a batch of photos, predicted by the full model: where no box is given,
        the :attr:`person_search` proposals (re-fitted by the :attr:`top_down` runner), else the given box as it is.

        Raises:
            CnnmrfError: a given box lies outside its image.
        """
        photos = [self.photo(image, factor) for image, factor in images]
        search = self.person_search
        proposals: list[list[Proposal]] = []
        for photo, box in zip(photos, boxes, strict=True):
            if box is None:
                proposals.append(search.propose(photo))
            else:
                check_box(box, photo.size)
                proposals.append([Proposal(np.asarray(box, dtype=np.float64), 0.0, "given")])
        return self.top_down.candidates(photos, proposals)

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
        sizes = [original_size(image, factor) for image, factor in images]
        found = self.candidates(images, boxes)
        people = self.people(found, [box is not None for box in boxes], sizes)
        return [
            ImagePrediction(file, size, people[i], self.precision, self.search_name)
            for i, (file, size) in enumerate(zip(files, sizes))
        ]

    def people(self, found: Candidates, given: Sequence[bool], sizes: list[tuple[int, int]]) -> list[list[Person]]:
        """Score the candidates, then :func:`select_people` per photo: a searched photo's threshold is
        :attr:`threshold` (uncalibrated: only the best candidate), a given box's one person is never dropped."""
        if not found.proposals:
            return [[] for _ in sizes]
        reported_name = SPATIAL if self.use_spatial and SPATIAL in found.sets else DETECTOR
        reported = found.sets[reported_name]
        score = self.scorer.people(found)  # (N,) or None
        joint_scores = self.scorer.joints(reported_name, reported.scores)  # (N, K) or None
        rank = score if score is not None else reported.scores.mean(axis=-1)  # (N,) uncalibrated: mean peak
        thresholds = [None if score is None or g else self.threshold for g in given]
        kept = select_people(found.boxes, rank, found.owner, thresholds, self.search, self.max_people)
        people = []
        for mine, size in zip(kept, sizes, strict=True):
            limit = np.maximum(np.asarray(size, dtype=np.float64) - 1, 0)  # (2,)
            people.append(
                [
                    Person(
                        clip_box(found.boxes[c], size),
                        found.proposals[c].source,
                        np.clip(reported.joints[c], 0, limit),
                        reported.scores[c],
                        None if score is None else float(score[c]),
                        None if joint_scores is None else joint_scores[c],
                    )
                    for c in mine
                ]
            )
        return people

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
