"""The top-down runner: the full pose model in given torso boxes of photos, each proposal's box re-fitted to its
predicted torso and predicted again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.geometry import crop_transform
from cnnmrf.data.images import render
from cnnmrf.inference.calibration import NUM_PERSON_FEATURES_WITH_EVIDENCE, evidence_feature, person_features
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import DETECTOR, SPATIAL, Joints, final_joints, predict_crops
from cnnmrf.inference.proposals import Photo
from cnnmrf.inference.search import Proposal, box_from_joints
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.pose import PoseModel


@dataclass
class Candidates:
    """Torso boxes of a batch of photos that may hold people, each predicted by the full model."""

    owner: np.ndarray  # (N,) the photo each candidate belongs to
    proposals: list[Proposal]  # where each came from (its box before re-fitting)
    boxes: np.ndarray  # (N, 4) the final (re-fitted) torso boxes, original pixels
    sets: dict[str, Joints]  # per model output ("detector", "spatial"): (N, K, 2) joints and (N, K) peak scores
    faces: list[np.ndarray]  # per candidate: (M, 4) the faces found in its photo

    def final_joints(self) -> np.ndarray:
        """(N, K, 2) the final model's joints (:func:`final_joints`), also for no candidates at all."""
        return final_joints(self.sets).joints if self.proposals else np.zeros((0, len(JOINT_NAMES), 2))

    def features(self) -> np.ndarray:
        """(N, F + 1) :func:`person_features` (without a spatial model the detector's output stands in for it), then
        the person detector's :func:`evidence_feature` (NaN where it did not run)."""
        if not self.proposals:
            return np.zeros((0, NUM_PERSON_FEATURES_WITH_EVIDENCE))
        detector, spatial = self.sets[DETECTOR], self.sets.get(SPATIAL, self.sets[DETECTOR])
        evidence = evidence_feature(np.array([p.person for p in self.proposals], dtype=np.float64))  # (N,)
        return np.concatenate([person_features(detector, spatial, self.boxes, self.faces), evidence[:, None]], axis=1)


@dataclass
class TopDown:
    """The pose model on crops of photos around torso boxes (one batch for all), and the proposals' re-fit."""

    model: PoseModel  # eval mode, on device
    preprocess: PreprocessConfig  # the crop geometry the model was trained on
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the model lives
    config: InferenceConfig = field(default_factory=InferenceConfig)  # how each crop is predicted
    refine_steps: int = 1  # times each proposal's box is re-fitted to its predicted torso and predicted again ...
    exact: frozenset[str] = frozenset({"given"})  # ... but for proposals of these sources, predicted as they are

    def predict_boxes(self, photos: Sequence[Photo], boxes: Sequence[np.ndarray]) -> dict[str, Joints]:
        """Crop each photo around its (4,) torso box (original pixels) and run the model on all crops in one batch.

        Returns:
            Per model output (``config.use_spatial``: both), (N, K, 2) joints in original pixels and (N, K) scores;
            ``{}`` without boxes.
        """
        size = self.preprocess.input_size
        crops, transforms = [], []
        for photo, box in zip(photos, boxes, strict=True):
            transform = crop_transform(box, size, self.preprocess.crop_scale)  # (2, 3) original -> input
            source, source_factor = _prefiltered(photo.image, photo.decode_factor, transform[0, 0])
            crops.append(render(source, transform, size, source_factor))  # (S, S, 3)
            transforms.append(transform)
        if not crops:
            return {}
        return predict_crops(self.model, np.stack(crops), np.stack(transforms), self.device, self.config)

    def candidates(self, photos: Sequence[Photo], proposals: Sequence[Sequence[Proposal]]) -> Candidates:
        """Every proposal of every photo, predicted by the model.

        Each proposal whose source is not in ``exact`` (a given box; the person detector's, which are as precise) is
        re-fitted to its predicted torso (:func:`box_from_joints`) and predicted again ``refine_steps`` times.

        Args:
            photos: the photos.
            proposals: per photo, its torso-box proposals (original pixels).
        """
        owner = [i for i, found in enumerate(proposals) for _ in found]  # the photo each candidate belongs to
        flat = [proposal for found in proposals for proposal in found]
        current = [p.box for p in flat]  # (4,) each, original pixels
        sets = self.predict_boxes([photos[i] for i in owner], current)
        searched = [c for c, p in enumerate(flat) if p.source not in self.exact]
        for _ in range(self.refine_steps if searched else 0):
            # The proposals' scale and position are coarse: re-fit each box to its predicted torso, predict again.
            predicted = final_joints(sets).joints  # (N, K, 2)
            for c in searched:
                current[c] = box_from_joints(predicted[c], current[c], photos[owner[c]].size)
            again = self.predict_boxes([photos[owner[c]] for c in searched], [current[c] for c in searched])
            for name, joints in again.items():
                for field_now, field_again in zip(sets[name], joints):  # joints, scores, peak_mass
                    field_now[searched] = field_again
        faces = [photos[i].faces for i in owner]
        return Candidates(np.array(owner, dtype=np.int64), flat, np.array(current).reshape(-1, 4), sets, faces)


def _prefiltered(image: Image.Image, factor: float, scale: float) -> tuple[Image.Image, float]:
    """Box-filter the image down by an integer factor when the crop shrinks it 2x or more (as a JPEG draft decode
    does for the training crops), so the bilinear crop does not alias. Returns the image and its decode factor."""
    n = int(1.0 / (scale * factor)) if scale * factor < 0.5 else 1  # decoded pixels per model-input pixel
    return (image.reduce(n), factor * n) if n >= 2 else (image, factor)
