"""Where people may be in a photo: the proposal source's interface (a photo -> torso-box proposals) and the default
source, :class:`PersonSearch` (the part detector's multi-scale scan and faces, overlapping proposals dropped).

The parts of `predict` after this one (:class:`cnnmrf.inference.topdown.TopDown`, the scorer and
:func:`cnnmrf.inference.people.select_people`) only see :class:`Proposal` boxes, so another source (a learned person
detector) replaces this one by implementing :class:`ProposalSource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from cnnmrf.devices import autocast
from cnnmrf.inference.faces import FaceGeometry, face_proposals
from cnnmrf.inference.search import Proposal, SearchConfig, non_maximum_suppression, scan_proposals
from cnnmrf.models.detector import PartDetector


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
