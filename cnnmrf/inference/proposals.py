"""Where people may be in a photo: the proposal source's interface (a photo -> torso-box proposals), the default
source :class:`PersonDetectorSearch` (the learned person detector, `predict --search detector`), and
:class:`PersonSearch` (the part detector's multi-scale scan and faces, `predict --search scan`).

The parts of `predict` after this one (:class:`cnnmrf.inference.topdown.TopDown`, the scorer and
:func:`cnnmrf.inference.people.select_people`) only see :class:`Proposal` boxes, so any source implementing
:class:`ProposalSource` can replace these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from cnnmrf.devices import autocast
from cnnmrf.inference.faces import FaceGeometry, face_proposals
from cnnmrf.inference.person_boxes import detect_people
from cnnmrf.inference.search import Proposal, SearchConfig, box_iou, non_maximum_suppression, scan_proposals
from cnnmrf.models.detector import PartDetector
from cnnmrf.models.person import PersonDetector

# A face's torso box gets the person detector's evidence of its best box among the top EVIDENCE_BOXES that overlap it
# by EVIDENCE_OVERLAP (IoU) or more, else 0: the detector saw no torso there.
EVIDENCE_BOXES = 16
EVIDENCE_OVERLAP = 0.3


def original_size(image: Image.Image, decode_factor: float) -> tuple[int, int]:
    """(width, height) of a photo before its decode factor (original pixels per decoded pixel) shrank it."""
    return round(image.size[0] * decode_factor), round(image.size[1] * decode_factor)


@dataclass
class Photo:
    """A decoded photo and what the pipeline's parts share about it."""

    image: Image.Image  # RGB, decoded with decode_factor
    decode_factor: float = 1.0  # original pixels per decoded pixel (a JPEG decoded smaller: > 1)
    faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (M, 4) faces found in it, original pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in original pixels."""
        return original_size(self.image, self.decode_factor)


@runtime_checkable
class ProposalSource(Protocol):
    """Anything that proposes torso boxes where people may be in a photo."""

    def propose(self, photo: Photo) -> list[Proposal]:
        """Torso-box proposals in ``photo`` (boxes in its original pixels), the ones to verify first first."""
        ...


@dataclass
class PersonSearch:
    """The default :class:`ProposalSource`: the part detector's scan (:func:`scan_proposals`) and one box below each
    of the photo's faces, the overlapping ones dropped, at most ``config.max_proposals``: faces first, then by scan
    score."""

    name: ClassVar[str] = "scan"  # what `predict --search` calls it, recorded in each prediction

    detector: PartDetector  # eval mode, on device
    torso_px: float  # torso-box height the model was trained on, model-input pixels (input_size / crop_scale)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the detector lives
    config: SearchConfig = field(default_factory=SearchConfig)  # searched sizes, peaks and proposals kept
    dtype: torch.dtype = torch.float32  # the scan's arithmetic, float32 or bfloat16 (autocast)
    face_geometry: FaceGeometry | None = None  # face -> torso box (None: no face proposals)

    def propose(self, photo: Photo) -> list[Proposal]:
        """Torso-box proposals in a photo (see the class docstring); ``photo.faces`` give the face proposals."""
        with autocast(self.device, self.dtype):
            found = scan_proposals(
                self.detector, photo.image, self.torso_px, photo.decode_factor, self.config, self.device
            )
        if self.face_geometry is not None:
            found = face_proposals(photo.faces, self.face_geometry) + found
        if not found:
            return []
        ranked = sorted(found, key=lambda p: (p.source == "face", p.score), reverse=True)  # faces (largest) first
        kept = non_maximum_suppression(
            np.stack([p.box for p in ranked]), -np.arange(len(ranked), dtype=np.float64), self.config.proposal_overlap
        )
        return [ranked[i] for i in kept[: self.config.max_proposals]]


@dataclass(frozen=True)
class DetectorSearchConfig:
    """How many of the person detector's boxes are verified, and how they are pruned (:class:`PersonDetectorSearch`)."""

    # The bundled detector finds 98.3% of the 403 validation people among its top 3 boxes, 98.5% among its top 5;
    # `calibrate` finds 98.3% with 3 (min-score 0.15, 3% of person-free photos with a person), 98.5% with 4 (0.10, 5%).
    max_boxes: int = 3  # the detector's best boxes (local maxima of its centre map) proposed per photo ...
    min_score: float = 0.05  # ... if their centre probability is at least this
    crowd_score: float = 0.3  # further boxes are proposed while their probability is at least this (crowds) ...
    max_crowd: int = 12  # ... up to this many boxes in all
    long_side: int = 320  # the photo is resized to this longer side for the detector's pass (as trained)
    # People under ~1/16 of the photo's height are a few pixels at 320: a second, finer pass proposes the small boxes
    # it is sure of (validation frames shrunk 8x, bench/scales.py's layouts: 77% -> 93% among the proposals, +0.3
    # proposals a photo). It runs only where the first pass hints at small people: on those layouts every person it
    # added had such a hint; 28% of whole validation frames have one, so most photos skip its 44 ms.
    fine_side: int = 640  # a second pass at this longer side for small people (0: none) ...
    fine_height: float = 0.06  # ... proposes its boxes under this share of the photo's height ...
    fine_score: float = 0.3  # ... of at least this probability (up to max_crowd) ...
    fine_hint: float = 0.05  # ... where a first-pass box under 1.5 x fine_height has at least this probability
    # Faces add nobody the bundled detector misses (100 validation frames: 98.1% of 103 people found with them, 99.0%
    # without; `calibrate` 98.5% either way), and cost 28 ms a 720x480 photo: off, and then not searched at all.
    faces: bool = False  # also propose a torso box below each face found (needs a checkpoint's face geometry)
    proposal_overlap: float = 0.5  # proposals overlapping a better one more than this (IoU) are dropped unverified
    max_proposals: int = 14  # proposals verified per photo: boxes below faces (largest first), then detector boxes
    # Its boxes are as precise as the pose model's re-fit of them (40 validation frames: 81.4% of people found either
    # way, PCK@0.2 78.3 without, 77.0 with), which doubles the pose model's work per proposal.
    refine: bool = False  # re-fit the detector's boxes to their predicted torsos and predict again (faces' always are)


@dataclass
class PersonDetectorSearch:
    """A :class:`ProposalSource` from the learned person detector (:mod:`cnnmrf.models.person`): its best torso boxes in
    one pass over the photo, the small sure ones of a second, finer pass (``config.fine_side``), optionally one box
    below each of the photo's faces, the overlapping ones dropped, at most ``config.max_proposals``: faces first (as
    :class:`PersonSearch`), then the first pass's boxes by score, then the second's."""

    name: ClassVar[str] = "detector"  # what `predict --search` calls it, recorded in each prediction

    model: PersonDetector  # eval mode, on device
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the model lives
    config: DetectorSearchConfig = field(default_factory=DetectorSearchConfig)  # boxes kept and pruning
    dtype: torch.dtype = torch.float32  # the detector's arithmetic, float32 or bfloat16 (autocast)
    face_geometry: FaceGeometry | None = None  # face -> torso box (None: no face proposals)

    def propose(self, photo: Photo) -> list[Proposal]:
        """Torso-box proposals in a photo, in its original pixels (see the class docstring); ``photo.faces`` give the
        face proposals."""
        config, factor = self.config, photo.decode_factor
        k = max(config.max_boxes, config.max_crowd, EVIDENCE_BOXES)
        boxes = detect_people(self.model, photo.image, k, config.long_side, self.dtype, self.device, factor)  # (k, 5)
        rank = np.arange(k)
        wanted = (rank < config.max_boxes) & (boxes[:, 4] >= config.min_score)  # (k,) the best few ...
        wanted |= (rank < config.max_crowd) & (boxes[:, 4] >= config.crowd_score)  # ... and every likely one
        chosen = [boxes[wanted]]  # (n, 5) each
        small_hint = boxes[(boxes[:, 3] - boxes[:, 1]) < 1.5 * config.fine_height * photo.size[1], 4]  # (m,)
        if config.fine_side and small_hint.max(initial=0.0) >= config.fine_hint:
            fine = detect_people(
                self.model, photo.image, config.max_crowd, config.fine_side, self.dtype, self.device, factor
            )  # (max_crowd, 5)
            small = (fine[:, 3] - fine[:, 1]) < config.fine_height * photo.size[1]
            chosen.append(fine[small & (fine[:, 4] >= config.fine_score)])
        found = [Proposal(box[:4], float(box[4]), "detector", float(box[4])) for box in np.concatenate(chosen)]
        if config.faces and self.face_geometry is not None:
            faces = face_proposals(photo.faces, self.face_geometry)
            for face in faces:  # the detector's evidence for a face's box: its best box overlapping it (else none)
                overlap = box_iou(face.box[None], boxes[:, :4])[0]  # (k,)
                face.person = float(boxes[overlap >= EVIDENCE_OVERLAP, 4].max(initial=0.0))
            found = faces + found  # faces (largest) first, as PersonSearch
        if not found:
            return []
        kept = non_maximum_suppression(
            np.stack([p.box for p in found]), -np.arange(len(found), dtype=np.float64), config.proposal_overlap
        )
        return [found[i] for i in kept[: config.max_proposals]]
