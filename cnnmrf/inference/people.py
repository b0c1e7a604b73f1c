"""Which candidates are people: the scorer (a checkpoint's calibration: P(person) of each box, P(correct) of each
joint) and :func:`select_people` (merge, threshold, cap), the one selection step of `predict`, `calibrate` and the
benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnmrf.inference.calibration import Calibration
from cnnmrf.inference.search import SearchConfig, merge_people
from cnnmrf.inference.topdown import Candidates


@dataclass(frozen=True)
class Scorer:
    """Calibrated probabilities of the top-down runner's candidates (:class:`Calibration`)."""

    calibration: Calibration | None = None  # None: uncalibrated, no probabilities

    def people(self, found: Candidates) -> np.ndarray | None:
        """(N,) P(the candidate's box holds a person), or None without calibration or candidates."""
        if self.calibration is None or not found.proposals:
            return None
        return self.calibration.person.probability(found.features())

    def joints(self, output: str, scores: np.ndarray) -> np.ndarray | None:
        """(N, K) P(each joint within 0.1 torso lengths of the truth) from the (N, K) peak scores of a model output
        (``"detector"`` or ``"spatial"``), or None without calibration (or none for that output)."""
        joint_map = None if self.calibration is None else self.calibration.joints.get(output)
        return None if joint_map is None else joint_map.probability(scores)


def select_people(
    boxes: np.ndarray,
    scores: np.ndarray,
    owner: np.ndarray,
    thresholds: Sequence[float | None],
    search: SearchConfig,
    max_people: int | None = None,
) -> list[np.ndarray]:
    """The people reported in each photo: its candidates merged where they overlap (:func:`merge_people`: the likelier
    kept), those scored below the photo's threshold dropped, at most ``max_people`` left.

    Args:
        boxes: (N, 4) the candidates' torso boxes.
        scores: (N,) how likely each is a person: calibrated P(person), or any ranking where the threshold is None.
        owner: (N,) the photo each candidate is in, 0 to ``len(thresholds) - 1``.
        thresholds: per photo, the score below which its candidates are dropped; None keeps only the likeliest (scores
            that are not probabilities, or a given box's one person).
        search: the merge's overlaps (``person_overlap``, ``person_inside``).
        max_people: at most this many people per photo (None: all).

    Returns:
        Per photo, (M,) indices into the candidates, likeliest first.
    """
    kept = []
    for photo, threshold in enumerate(thresholds):
        mine = np.flatnonzero(owner == photo)  # (n,)
        if len(mine):
            mine = mine[merge_people(boxes[mine], scores[mine], search)]
        mine = mine[:1] if threshold is None else mine[scores[mine] >= threshold]
        kept.append(mine[:max_people])
    return kept
