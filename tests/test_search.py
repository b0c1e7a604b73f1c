"""Tests of the person search's building blocks: box overlap, non-maximum suppression, peaks and the scan (and the
bounds on its work)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnmrf.inference.search import (
    SearchConfig,
    box_iou,
    local_peaks,
    non_maximum_suppression,
    scan_proposals,
    scan_sizes,
    torso_box,
)
from cnnmrf.models.detector import DetectorConfig, PartDetector
from tests.fixtures import red_blob_photo, torso_finder_model

TORSO_PX = 64 / 3  # the tiny models' training torso height: 64 px inputs, crops 3x the torso box


def centre(box: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of an x1, y1, x2, y2 box."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def test_box_iou_known_values() -> None:
    a = np.array([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 14.0]])
    b = np.array(
        [
            [0.0, 0.0, 2.0, 2.0],  # identical to a[0]
            [1.0, 0.0, 3.0, 2.0],  # half of a[0]: intersection 2, union 4 + 4 - 2 = 6
            [5.0, 5.0, 6.0, 6.0],  # disjoint from both
            [2.0, 0.0, 4.0, 2.0],  # touches a[0] along an edge only
            [10.0, 12.0, 12.0, 16.0],  # half of a[1]: intersection 4, union 8 + 8 - 4 = 12
        ]
    )
    iou = box_iou(a, b)
    assert iou.shape == (2, 5)
    np.testing.assert_allclose(iou[0], [1.0, 1 / 3, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0, 0.0, 1 / 3])
    np.testing.assert_allclose(box_iou(b, a), iou.T)  # symmetric
    assert box_iou(a[0], a[0]).shape == (1, 1)  # single boxes are (1, 4)


def test_non_maximum_suppression_keeps_separate_people_and_merges_duplicates() -> None:
    boxes = np.stack(
        [
            torso_box(150, 60, 40),  # 0: person B
            torso_box(50, 60, 40),  # 1: person A, the best box
            torso_box(52, 61, 42),  # 2: a duplicate of A
            torso_box(148, 62, 38),  # 3: a duplicate of B, better than 0
            torso_box(50, 60, 12),  # 4: a small box inside A (IoU below 0.3: kept)
        ]
    )
    scores = np.array([0.5, 0.9, 0.8, 0.7, 0.1])
    assert box_iou(boxes[4], boxes[1])[0, 0] < 0.3
    np.testing.assert_array_equal(non_maximum_suppression(boxes, scores, 0.3), [1, 3, 4])
    # nothing overlaps more than IoU 1: every box is kept, best first
    np.testing.assert_array_equal(non_maximum_suppression(boxes, scores, 1.0), [1, 2, 3, 0, 4])
    assert non_maximum_suppression(boxes[:1], scores[:1], 0.3).tolist() == [0]


def test_local_peaks_finds_two_separated_bumps_best_first() -> None:
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")

    def bump(x: float, y: float, height: float) -> torch.Tensor:
        return height * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))

    scores = bump(22, 5, 1.0) + bump(6, 14, 2.0) - 1.0  # (20, 30): the taller bump at (6, 14)
    np.testing.assert_array_equal(local_peaks(scores, 2, radius=3).numpy(), [[6, 14], [22, 5]])
    np.testing.assert_array_equal(local_peaks(scores, 1, radius=3).numpy(), [[6, 14]])
    many = local_peaks(scores, 10, radius=3)
    assert len(many) <= 10 and many[:2].tolist() == [[6, 14], [22, 5]]


@pytest.mark.parametrize("blob", [(60.0, 50.0), (110.0, 80.0), (30.0, 30.0)])
def test_scan_proposals_put_the_best_proposal_on_the_red_blob(blob: tuple[float, float]) -> None:
    """With a detector that takes red for a torso, the best-scored proposal sits on the red blob, wherever it is: on
    the centre of the heatmap cell holding it (proposals are not refined within a cell; the full model re-fits them)."""
    model = torso_finder_model()
    config = SearchConfig()
    proposals = scan_proposals(model.detector, red_blob_photo(*blob), TORSO_PX, config=config)
    assert 1 <= len(proposals) <= config.peaks_per_scale * config.num_scales
    assert all(p.source == "scan" and np.isfinite(p.box).all() for p in proposals)
    best = max(proposals, key=lambda p: p.score)
    height = best.box[3] - best.box[1]
    cell = model.detector.config.stride * height / TORSO_PX  # a heatmap cell at that scale, in original pixels
    assert centre(best.box) == pytest.approx(blob, abs=cell / 2 + 0.1)
    assert 0.16 * 120 * 0.95 <= height <= 0.9 * 120 * 1.05  # one of the searched torso heights
    assert best.box[2] - best.box[0] == pytest.approx(height * 2 / 3)


class NeverCalled(torch.nn.Module):
    """A detector that must not run (the scan should have skipped every scale)."""

    config = DetectorConfig(input_size=64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError(f"the scan ran the detector on a {tuple(x.shape[-2:])} image")


def test_the_scan_skips_scales_that_make_no_sense_and_bounds_its_work() -> None:
    """A 1-pixel-tall photo was enlarged into a 266000x533 image (93 s, 6.5 GB): torsos shorter than
    ``min_torso_pixels`` are not searched, and no resized photo exceeds ``max_scan_pixels``."""
    config = SearchConfig()
    for size in ((500, 1), (100000, 3), (40, 8)):  # every searched torso (0.16 to 0.9 of the height) under 8 pixels
        assert scan_sizes(size, TORSO_PX, 1.0, config) == []
        assert scan_proposals(NeverCalled(), Image.new("RGB", size), TORSO_PX, config=config) == []
    heights = [round(h) for h in 120 * np.geomspace(config.min_fraction, config.max_fraction, config.num_scales)]
    assert len(scan_sizes((160, 120), TORSO_PX, 1.0, config)) == config.num_scales  # an ordinary photo: all scales
    assert len(scan_sizes((20, 20), TORSO_PX, 1.0, config)) == 3 and heights[0] * 20 / 120 < 8  # the three >= 8 px
    # the resized size grows with the aspect ratio alone: a strip's finest scales are skipped
    strip = SearchConfig(max_scan_pixels=200_000)
    sizes = scan_sizes((8000, 40), TORSO_PX, 1.0, strip)
    assert 0 < len(sizes) < config.num_scales and all(w * h <= 200_000 for w, h in sizes)


def test_the_scan_pads_tiny_resized_photos_for_a_stride_2_detector() -> None:
    """A 60x2000 photo resized to 3 pixels wide was padded to 8, which the coarsest pyramid level pooled to nothing
    ("Output size is too small"): padded sides are now at least what every level can pool."""
    torch.manual_seed(0)
    detector = PartDetector(
        DetectorConfig(
            input_size=64,
            bank_channels=(4, 4, 4),
            head_channels=(4, 4),
            head_kernel=3,
            output_stride=2,
            refine_channels=4,
        )
    ).eval()
    proposals = scan_proposals(detector, red_blob_photo(30, 1000, size=(60, 2000)), TORSO_PX)
    assert len(proposals) > 0 and all(np.isfinite(p.box).all() for p in proposals)
    assert all(0 <= centre(p.box)[0] <= 59 and 0 <= centre(p.box)[1] <= 1999 for p in proposals)
