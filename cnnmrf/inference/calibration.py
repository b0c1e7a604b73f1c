"""Calibrated scores: the person verifier and per-joint confidence maps (logistic fits), stored in checkpoints.

A checkpoint's ``calibration`` entry (written by `cnnmrf calibrate`) turns raw model outputs into probabilities:

- **joint scores**: ``P(joint within 0.1 torso lengths of the prediction) = sigmoid(a_k * s_k + b_k)`` of the joint's
  peak score ``s_k`` (Platt scaling), one (a, b) pair per joint and per output (detector logits, spatial log-beliefs);
- **person score**: ``P(the torso box holds a person)``, a logistic regression on :func:`person_features` of the
  full model's prediction in that box (peak scores, detector/spatial agreement, body proportions);
- the **face geometry** that turns a face into a torso-box proposal, and the default ``--min-score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnmrf.inference.crops import Joints
from cnnmrf.inference.faces import FaceGeometry
from cnnmrf.joints import JOINT_NAMES, TORSO_PARTS

CALIBRATION_FORMAT = "cnnmrf-calibration-v1"
NOSE, TORSO = JOINT_NAMES.index("nose"), JOINT_NAMES.index("torso")
NUM_PERSON_FEATURES = 5 * len(JOINT_NAMES) + 5
# A verifier fitted on the person detector's candidates also reads its evidence (:func:`evidence_feature`), one column
# after the :func:`person_features`.
NUM_PERSON_FEATURES_WITH_EVIDENCE = NUM_PERSON_FEATURES + 1


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-2, sample_weight: np.ndarray | None = None, steps: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regressions by Newton's method, several independent problems at once (the bias is not penalised).

    Args:
        x: (..., N, F) features.
        y: (..., N) labels in {0, 1}.
        l2: ridge penalty on the weights (the loss is the weighted mean log loss + ``l2/2 * |w|^2``).
        sample_weight: (..., N) non-negative example weights (default: all 1; 0 leaves an example out).
        steps: Newton iterations (each solves one (F+1, F+1) system per problem).

    Returns:
        weights (..., F) and biases (...,) with ``P(y = 1) = sigmoid(x @ w + b)``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    f = x.shape[-1]
    sample = np.ones(y.shape) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)  # (..., N)
    sample = sample / np.maximum(sample.sum(axis=-1, keepdims=True), 1e-12)  # weighted mean over examples
    design = np.concatenate([x, np.ones((*x.shape[:-1], 1))], axis=-1)  # (..., N, F+1)
    theta = np.zeros((*x.shape[:-2], f + 1))  # (..., F+1)
    ridge = np.diag(np.r_[np.full(f, l2), 1e-9])  # (F+1, F+1)
    for _ in range(steps):
        p = sigmoid(np.einsum("...nf,...f->...n", design, theta))  # (..., N)
        grad = np.einsum("...nf,...n->...f", design, sample * (p - y)) + theta @ ridge  # (..., F+1)
        weight = sample * p * (1 - p)  # (..., N)
        hessian = np.einsum("...nf,...n,...ng->...fg", design, weight, design) + ridge  # (..., F+1, F+1)
        theta = theta - np.linalg.solve(hessian, grad[..., None])[..., 0]
    return theta[..., :f], theta[..., f]


def expected_calibration_error(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the example-weighted mean, over ``bins`` equal-width probability bins, of
    ``|mean outcome - mean probability|``. Shapes: (N,), (N,) (any shape, flattened); NaN outcomes are left out."""
    p, o = np.ravel(probability).astype(np.float64), np.ravel(outcome).astype(np.float64)
    keep = np.isfinite(o) & np.isfinite(p)
    p, o = p[keep], o[keep]
    if len(p) == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # (N,)
    counts = np.bincount(index, minlength=bins)
    gaps = np.abs(np.bincount(index, o, bins) - np.bincount(index, p, bins))  # per-bin |sum outcome - sum prob|
    return float(gaps.sum() / counts.sum())


def face_at_nose(nose: np.ndarray, boxes: np.ndarray, faces: Sequence[np.ndarray]) -> np.ndarray:
    """Whether a face was found where each predicted person's nose is: a face box centred within a quarter of the
    torso-box height of the nose, 0.25-1.0 torso-box heights wide (FLIC: faces are ~0.5).

    Shapes: nose (N, 2), boxes (N, 4), faces N arrays (M_n, 4) -> (N,) float 0/1.
    """
    found = np.zeros(len(nose))
    for n, (point, box, candidates) in enumerate(zip(nose, boxes, faces)):
        if len(candidates):
            height = max(box[3] - box[1], 1e-6)
            centre = (candidates[:, :2] + candidates[:, 2:]) / 2  # (M, 2)
            width = (candidates[:, 2] - candidates[:, 0]) / height  # (M,)
            near = np.linalg.norm(centre - point, axis=-1) < 0.25 * height
            found[n] = float((near & (width > 0.25) & (width < 1.0)).any())
    return found


def person_features(
    detector: Joints, spatial: Joints, boxes: np.ndarray, faces: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """What the person verifier sees of the full model's prediction in a torso box.

    Per joint and per output (detector, spatial model): the map's peak value and its peak mass (how concentrated the
    map is, :class:`cnnmrf.inference.crops.Joints`); how far apart the two outputs put the joint (in box heights,
    capped at 1: the spatial model moving a joint far means its prior disagrees with the evidence). Then body
    proportions of the spatial joints, in box heights: shoulder width, shoulder-to-hip length, nose height above the
    shoulders, and the torso joint's distance from the box centre; and whether a face was found at the nose
    (:func:`face_at_nose`; ``faces`` None: none searched).

    Shapes: (N, K, ...) joints of each output, boxes (N, 4), all in original pixels, faces N arrays (M_n, 4) ->
    (N, 5K + 5).
    """
    lsho, rsho, lhip, rhip = TORSO_PARTS
    points = spatial.joints  # (N, K, 2)
    height = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)[:, None]  # (N, 1)
    moved = np.minimum(np.linalg.norm(detector.joints - points, axis=-1) / height, 1.0)  # (N, K)
    shoulders = (points[:, lsho] + points[:, rsho]) / 2  # (N, 2)
    hips = (points[:, lhip] + points[:, rhip]) / 2  # (N, 2)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    body = (
        np.stack(
            [
                np.linalg.norm(points[:, lsho] - points[:, rsho], axis=-1),
                np.linalg.norm(shoulders - hips, axis=-1),
                shoulders[:, 1] - points[:, NOSE, 1],
                np.linalg.norm(points[:, TORSO] - centre, axis=-1),
            ],
            axis=-1,
        )
        / height
    )  # (N, 4)
    face = face_at_nose(points[:, NOSE], boxes, faces if faces is not None else [np.zeros((0, 4))] * len(boxes))
    parts = [detector.scores, spatial.scores, detector.peak_mass, spatial.peak_mass, moved, np.clip(body, -3, 3)]
    return np.concatenate([*parts, face[:, None]], axis=-1)


def evidence_feature(person: np.ndarray) -> np.ndarray:
    """(N,) the person detector's probability of each candidate's box as a verifier feature: its logit (clipped to
    +-6.9); NaN (no person detector ran) stays NaN."""
    p = np.clip(np.asarray(person, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.log(p) - np.log1p(-p)


@dataclass
class PersonVerifier:
    """Logistic regression on standardised :func:`person_features` (and, fitted on the person detector's candidates,
    :func:`evidence_feature`): ``P = sigmoid(((f - mean) / std) @ w + b)``."""

    mean: np.ndarray  # (F,) feature means on the fitting data
    std: np.ndarray  # (F,) feature standard deviations on the fitting data
    weights: np.ndarray  # (F,)
    bias: float

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, l2: float = 1e-2) -> PersonVerifier:
        """Fit on (N, F) features and (N,) 0/1 labels."""
        mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
        weights, bias = fit_logistic((features - mean) / std, labels, l2)
        return cls(mean, std, weights, float(bias))

    @property
    def uses_evidence(self) -> bool:
        """Whether it reads the person detector's evidence (fitted on that detector's candidates)."""
        return len(self.weights) == NUM_PERSON_FEATURES_WITH_EVIDENCE

    def probability(self, features: np.ndarray) -> np.ndarray:
        """(N,) P(person) of (N, F') features, F' >= F: the first F are read; an unknown (NaN) feature, such as the
        evidence of a person detector that did not run, counts as its mean."""
        z = (features[:, : len(self.weights)] - self.mean) / self.std  # (N, F)
        return sigmoid(np.nan_to_num(z, nan=0.0) @ self.weights + self.bias)


@dataclass
class JointCalibration:
    """Platt scaling of peak scores, one (a, b) per joint: ``P(correct at 0.1) = sigmoid(a * score + b)``."""

    scale: np.ndarray  # (K,) a
    offset: np.ndarray  # (K,) b

    @classmethod
    def fit(cls, scores: np.ndarray, correct: np.ndarray) -> JointCalibration:
        """Fit on (N, K) peak scores and (N, K) 0/1 outcomes (all joints at once; NaN outcomes left out)."""
        known = np.isfinite(correct) & np.isfinite(scores)  # (N, K)
        x = np.where(known, scores, 0.0).T[..., None]  # (K, N, 1): one problem per joint
        y = np.where(known, correct, 0.0).T  # (K, N)
        scale, offset = fit_logistic(x, y, l2=1e-4, sample_weight=known.T.astype(np.float64))  # (K, 1), (K,)
        return cls(scale[:, 0], offset)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """(..., K) probabilities of (..., K) peak scores."""
        return sigmoid(self.scale * np.asarray(scores, dtype=np.float64) + self.offset)


@dataclass
class Calibration:
    """Everything `cnnmrf calibrate` fits for one checkpoint (see the module docstring)."""

    joints: dict[str, JointCalibration]  # per model output ("detector", "spatial"): the joint-score maps
    person: PersonVerifier  # P(person) of a verified torso box
    faces: FaceGeometry = field(default_factory=FaceGeometry)  # face box -> torso box
    min_score: float = 0.5  # default --min-score, chosen on validation frames
    report: dict[str, Any] = field(default_factory=dict)  # what was measured when fitting (for the record)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in the checkpoint under ``calibration``."""
        return {
            "format": CALIBRATION_FORMAT,
            "joints": {
                name: {"scale": c.scale.tolist(), "offset": c.offset.tolist()} for name, c in self.joints.items()
            },
            "person": {
                "mean": self.person.mean.tolist(),
                "std": self.person.std.tolist(),
                "weights": self.person.weights.tolist(),
                "bias": self.person.bias,
            },
            "faces": self.faces.to_dict(),
            "min_score": self.min_score,
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Inverse of :meth:`to_dict`, checked.

        Raises:
            ValueError: not a calibration of this format, or arrays of the wrong size or not finite.
        """
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"not a {CALIBRATION_FORMAT} calibration")
        k = len(JOINT_NAMES)
        try:
            joints = {
                name: JointCalibration(_array(c["scale"], k), _array(c["offset"], k))
                for name, c in data["joints"].items()
            }
            p = data["person"]
            f = NUM_PERSON_FEATURES_WITH_EVIDENCE if len(p["weights"]) > NUM_PERSON_FEATURES else NUM_PERSON_FEATURES
            person = PersonVerifier(
                _array(p["mean"], f), _array(p["std"], f), _array(p["weights"], f), float(_array([p["bias"]], 1)[0])
            )
            min_score = float(data["min_score"])
            faces = FaceGeometry.from_dict(data["faces"])
            if not 0.0 <= min_score <= 1.0:  # also false for NaN
                raise ValueError(f"calibration min_score {min_score} is not a probability")
            if (person.std <= 0).any():
                raise ValueError("calibration holds a feature scale (std) that is not positive")
            if not all(np.isfinite([faces.offset_x, faces.offset_y, faces.height])) or faces.height <= 0:
                raise ValueError(f"calibration holds an invalid face geometry {faces}")
            return cls(joints, person, faces, min_score, dict(data.get("report", {})))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"calibration is missing or has a malformed entry ({err})") from err


def _array(values: Any, size: int) -> np.ndarray:
    """A finite float array of ``size`` values, or ValueError."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,) or not np.isfinite(array).all():
        raise ValueError(f"calibration holds {array.size} values (some not finite?) where {size} finite numbers belong")
    return array
