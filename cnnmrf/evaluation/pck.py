"""PCK (percentage of correct keypoints) on FLIC, normalised by the left-shoulder to right-hip distance."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnmrf.joints import JOINT_NAMES, NORM_PAIR

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
CURVE_THRESHOLDS: np.ndarray = np.round(np.arange(0.01, 0.5001, 0.01), 2)  # the curve 0.01..0.5

# Left/right joint pairs whose PCK values are averaged into one group score.
JOINT_GROUPS: dict[str, tuple[str, str]] = {
    "wrist": ("lwri", "rwri"),
    "elbow": ("lelb", "relb"),
    "shoulder": ("lsho", "rsho"),
    "hip": ("lhip", "rhip"),
}
# Single joints reported as their own group.
SINGLE_GROUPS: tuple[str, ...] = ("nose", "torso")
# Joints left out of the "mean_limbs" average (which covers the 8 arm and hip joints).
NON_LIMB_JOINTS: tuple[str, ...] = ("nose", "torso")


def normalized_distances(pred: np.ndarray, truth: np.ndarray, norm_pair: tuple[int, int] = NORM_PAIR) -> np.ndarray:
    """Normalised distance of every predicted joint to its ground truth.

    Args:
        pred: Predicted joints, shape (N, K, 2), (x, y) in original-image pixels.
        truth: Ground-truth joints, same shape and units; NaN marks an unlabelled joint.
        norm_pair: Joint indices whose ground-truth distance is the per-example normaliser
            (left shoulder, right hip by default).

    Returns:
        (N, K) array: ``||pred - truth|| / ||truth[a] - truth[b]||``. NaN where the ground truth is
        missing or the normaliser is missing or zero (excluded from PCK); ``inf`` where the ground truth
        exists but the prediction is NaN (counted as a miss).
    """
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and truth must both have shape (N, K, 2); got {pred.shape} and {truth.shape}")
    a, b = norm_pair
    diff = pred - truth
    dist = np.hypot(diff[..., 0], diff[..., 1])
    ref = truth[:, a] - truth[:, b]
    norm = np.hypot(ref[:, 0], ref[:, 1])
    norm = np.where(np.isfinite(norm) & (norm > 0), norm, np.nan)
    truth_ok = np.isfinite(truth).all(axis=-1)
    pred_bad = ~np.isfinite(pred).all(axis=-1)
    dist = np.where(truth_ok & pred_bad, np.inf, np.where(truth_ok, dist, np.nan))
    with np.errstate(invalid="ignore"):
        return dist / norm[:, None]


def pck(norm_dist: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Share of examples whose normalised distance is within each threshold.

    Args:
        norm_dist: (N, K) normalised distances (see :func:`normalized_distances`).
        thresholds: Thresholds r; a joint is correct when ``norm_dist <= r`` (inclusive).

    Returns:
        (T, K) fractions in [0, 1]. NaN distances (unlabelled joints) are excluded from the
        denominator; a joint with no labelled example gets NaN.
    """
    d = np.asarray(norm_dist, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"norm_dist must have shape (N, K); got {d.shape}")
    r = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1, 1)
    valid = ~np.isnan(d)
    hits = ((d[None] <= r) & valid[None]).sum(axis=1)  # NaN <= r is False anyway
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """NaN-ignoring mean that returns NaN (silently) when every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _group_values(values: np.ndarray, joint_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Group scores from per-joint scores (..., K): left/right means, single joints, means over joints."""
    index = {name: i for i, name in enumerate(joint_names)}
    groups: dict[str, np.ndarray] = {}
    for group, (left, right) in JOINT_GROUPS.items():
        if left in index and right in index:
            groups[group] = _nanmean(values[..., [index[left], index[right]]], axis=-1)
    for name in SINGLE_GROUPS:
        if name in index:
            groups[name] = values[..., index[name]].copy()
    groups["mean"] = _nanmean(values, axis=-1)
    limbs = [i for i, name in enumerate(joint_names) if name not in NON_LIMB_JOINTS]
    groups["mean_limbs"] = _nanmean(values[..., limbs], axis=-1)
    return groups


def _pct(x: float) -> float | None:
    """Fraction -> percentage rounded to 0.01, or None for NaN (JSON has no NaN)."""
    return None if not np.isfinite(x) else round(float(x) * 100.0, 2)


def _key(r: float) -> str:
    """Threshold as a JSON key, e.g. 0.05 -> "0.05"."""
    return f"{float(r):g}"


@dataclass
class PCKResult:
    """PCK scores of one set of predictions; all scores are fractions in [0, 1] (NaN: no labelled example).

    Attributes:
        joint_names: Joint names, one per column K.
        thresholds: (T,) thresholds of the headline numbers (``DEFAULT_THRESHOLDS``).
        per_joint: (T, K) PCK per threshold and joint.
        curve_thresholds: (C,) thresholds of the curve (``CURVE_THRESHOLDS``, 0.01..0.5).
        curve: (C, K) PCK per curve threshold and joint.
        num_examples: Number of evaluated examples N.
        num_labelled: (K,) number of examples with a usable ground truth per joint (the PCK denominators).
        groups: Group name -> (T,) scores: "wrist", "elbow", "shoulder", "hip" (mean of the left and right
            joint), "nose", "torso" (the joint itself), "mean" (mean over all K joints) and "mean_limbs"
            (mean over the joints other than nose and torso, i.e. the 8 arm and hip joints).
        group_curves: Same keys -> (C,) curves.
    """

    joint_names: tuple[str, ...]
    thresholds: np.ndarray
    per_joint: np.ndarray
    curve_thresholds: np.ndarray
    curve: np.ndarray
    num_examples: int
    num_labelled: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    group_curves: dict[str, np.ndarray] = field(default_factory=dict)

    def at(self, name: str, threshold: float) -> float:
        """PCK fraction of one joint or group at one of ``thresholds``.

        Args:
            name: Joint name (e.g. "lwri") or group name (e.g. "wrist", "mean").
            threshold: One of ``self.thresholds``.

        Returns:
            The fraction in [0, 1] (NaN if nothing was labelled).
        """
        t = int(np.flatnonzero(np.isclose(self.thresholds, threshold))[0])
        if name in self.groups:
            return float(self.groups[name][t])
        return float(self.per_joint[t, list(self.joint_names).index(name)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary; PCK values are percentages (0-100) rounded to 0.01, NaN -> None.

        Returns:
            ``{"num_examples", "joint_names", "thresholds", "num_labelled", "pck": {joint: {"0.05": %, ...}},
            "groups": {group: {"0.05": %, ...}}, "mean_definition", "curve": {"thresholds": [...],
            "joints": {joint: [%...]}, "groups": {group: [%...]}}}``.
        """
        keys = [_key(r) for r in self.thresholds]
        return {
            "num_examples": int(self.num_examples),
            "joint_names": list(self.joint_names),
            "thresholds": [float(r) for r in self.thresholds],
            "num_labelled": {n: int(c) for n, c in zip(self.joint_names, self.num_labelled)},
            "pck": {
                n: {k: _pct(v) for k, v in zip(keys, self.per_joint[:, j])} for j, n in enumerate(self.joint_names)
            },
            "groups": {g: {k: _pct(v) for k, v in zip(keys, vals)} for g, vals in self.groups.items()},
            "mean_definition": {
                "mean": "mean of the per-joint PCK over all joints",
                "mean_limbs": "mean of the per-joint PCK over all joints except " + ", ".join(NON_LIMB_JOINTS),
                "left/right groups": "mean of the left and right joint's PCK",
            },
            "curve": {
                "thresholds": [float(r) for r in self.curve_thresholds],
                "joints": {n: [_pct(v) for v in self.curve[:, j]] for j, n in enumerate(self.joint_names)},
                "groups": {g: [_pct(v) for v in vals] for g, vals in self.group_curves.items()},
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCKResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved metrics.json), up to its rounding.

        Args:
            data: The dictionary written by :meth:`to_dict` (extra keys are ignored).

        Returns:
            The reconstructed result (fractions, NaN for None).
        """

        def frac(values: Sequence[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v / 100.0 for v in values], dtype=np.float64)

        names = tuple(data["joint_names"])
        keys = [_key(r) for r in data["thresholds"]]
        curve = data["curve"]
        return cls(
            joint_names=names,
            thresholds=np.asarray(data["thresholds"], dtype=np.float64),
            per_joint=np.stack([frac([data["pck"][n][k] for n in names]) for k in keys]),
            curve_thresholds=np.asarray(curve["thresholds"], dtype=np.float64),
            curve=np.stack([frac(curve["joints"][n]) for n in names], axis=1),
            num_examples=int(data["num_examples"]),
            num_labelled=np.array([data["num_labelled"][n] for n in names], dtype=np.int64),
            groups={g: frac([v[k] for k in keys]) for g, v in data["groups"].items()},
            group_curves={g: frac(v) for g, v in curve["groups"].items()},
        )


def evaluate_pck(
    pred: np.ndarray,
    truth: np.ndarray,
    joint_names: Sequence[str] = JOINT_NAMES,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    curve_thresholds: Sequence[float] = CURVE_THRESHOLDS,
) -> PCKResult:
    """Score predictions against ground truth.

    Args:
        pred: (N, K, 2) predicted joints in original-image pixels.
        truth: (N, K, 2) ground truth in the same frame (NaN for unlabelled joints).
        joint_names: K joint names; must contain "lsho" and "rhip" (the normaliser).
        thresholds: Headline thresholds.
        curve_thresholds: Thresholds of the PCK curve.

    Returns:
        The :class:`PCKResult`.
    """
    names = tuple(joint_names)
    if np.shape(pred)[1:2] != (len(names),):
        raise ValueError(f"expected {len(names)} joints, got pred of shape {np.shape(pred)}")
    norm_pair = (names.index("lsho"), names.index("rhip"))
    dist = normalized_distances(pred, truth, norm_pair)
    per_joint = pck(dist, thresholds)
    curve = pck(dist, curve_thresholds)
    return PCKResult(
        joint_names=names,
        thresholds=np.asarray(thresholds, dtype=np.float64),
        per_joint=per_joint,
        curve_thresholds=np.asarray(curve_thresholds, dtype=np.float64),
        curve=curve,
        num_examples=int(dist.shape[0]),
        num_labelled=(~np.isnan(dist)).sum(axis=0),
        groups=_group_values(per_joint, names),
        group_curves=_group_values(curve, names),
    )
