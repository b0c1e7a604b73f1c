"""Tests of `cnnmrf calibrate`: labelling search candidates, person-free regions, clutter and the command itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.evaluation import calibrate
from cnnmrf.evaluation.frames import Frame, far_from_people, matches_person, person_free_region, synthetic_clutter
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.search import torso_box
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, load_checkpoint
from tests.fixtures import draw_image, tiny_annotations, write_tiny_checkpoint
from tests.helpers import assert_one_line_error, invoke, text

K = len(JOINT_NAMES)


@pytest.fixture(scope="module")
def checkpoint(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_config)


def test_matches_person_and_far_from_people_on_hand_made_boxes() -> None:
    truth = np.stack([torso_box(100, 100, 40), torso_box(300, 100, 60)])  # (2, 4)
    found = np.stack(
        [
            torso_box(100, 100, 40),  # 0: person 0 exactly
            torso_box(119, 100, 40),  # 1: centre 19 px off, under half its height: a match
            torso_box(100, 121, 40),  # 2: 21 px off: no match, but too near to be a negative
            torso_box(100, 100, 27),  # 3: 0.675x as tall: no match
            torso_box(100, 100, 56),  # 4: 1.4x as tall: a match
            torso_box(100, 100, 60),  # 5: 1.5x as tall: no match
            torso_box(200, 100, 40),  # 6: between them, over a torso height from both: a negative
            torso_box(300, 100, 60),  # 7: person 1 exactly
            torso_box(250, 100, 60),  # 8: 150 px from person 0 but 50 from person 1 (60 tall): not a negative
        ]
    )
    matches = matches_person(found, truth)
    assert matches.shape == (9, 2) and matches.dtype == bool
    np.testing.assert_array_equal(np.flatnonzero(matches[:, 0]), [0, 1, 4])
    np.testing.assert_array_equal(np.flatnonzero(matches[:, 1]), [7])
    np.testing.assert_array_equal(far_from_people(found, truth), [0, 0, 0, 0, 0, 0, 1, 0, 0])
    assert far_from_people(found[6], truth[:1]).tolist() == [True]  # a single box is (1, 4)


def frame(*people: tuple[float, float, float]) -> Frame:
    """A frame of people (torso centre x, y and height) whose joints spread 1.5 heights left and right of the torso,
    one of them unlabelled (NaN)."""
    boxes = np.stack([torso_box(cx, cy, h) for cx, cy, h in people])  # (P, 4)
    spread = np.linspace(-0.75, 0.75, K)  # in torso heights
    joints = np.stack([np.stack([cx + spread * h, np.full(K, cy)], axis=-1) for cx, cy, h in people])  # (P, K, 2)
    joints[:, 0] = np.nan
    return Frame("frame.jpg", boxes, joints)


def test_person_free_region_is_a_full_height_strip_clear_of_the_people() -> None:
    # one person at x = 100: labelled joints 76.7 to 130, widened by half its torso height (20) on both sides
    one = frame((100.0, 60.0, 40.0))
    region = person_free_region((400, 120), one)
    assert region is not None
    left_end, right_start = np.nanmin(one.joints[..., 0]) - 20, np.nanmax(one.joints[..., 0]) + 20
    assert (left_end, right_start) == pytest.approx((56.67, 150.0), abs=0.01)
    np.testing.assert_allclose(region, [right_start, 0, 400, 120])  # the wider side: right of the person
    assert region[0] > one.boxes[0, 2] and region[0] > np.nanmax(one.joints[..., 0])
    # a person at the right leaves the left strip
    right = frame((330.0, 60.0, 40.0))
    np.testing.assert_allclose(person_free_region((400, 120), right), [0, 0, np.nanmin(right.joints[..., 0]) - 20, 120])
    # people at both sides leave no strip a quarter of the frame wide
    assert person_free_region((400, 120), frame((60.0, 60.0, 40.0), (330.0, 60.0, 40.0))) is None
    assert person_free_region((400, 120), frame((60.0, 60.0, 40.0), (330.0, 60.0, 40.0)), min_width=0.04) is not None
    # a person filling the frame: nothing clear at all
    assert person_free_region((160, 120), frame((80.0, 60.0, 100.0))) is None


def test_synthetic_clutter_is_deterministic_per_seed_and_sized() -> None:
    first = synthetic_clutter(3, seed=5, size=(64, 48))
    again = synthetic_clutter(3, seed=5, size=(64, 48))
    other = synthetic_clutter(3, seed=6, size=(64, 48))
    assert len(first) == 3 and all(image.size == (64, 48) and image.mode == "RGB" for image in first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not any(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))  # each image is drawn anew
    assert synthetic_clutter(0, seed=5) == [] and synthetic_clutter(1, seed=5)[0].size == (480, 360)


def test_calibrate_refuses_data_where_the_search_finds_nobody(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The untrained tiny model finds none of the annotated stick figures: no person score can be fitted."""
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", tiny_h5, "-c", checkpoint, "--out", out, "--max-frames", "2", "--clutter", "2"]
    result = invoke(*args, "--flic", tiny_flic, "--val-fraction", "0.5")
    assert_one_line_error(result, "0 annotated people", "too few")
    assert not out.exists()


@pytest.fixture
def half_people(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relabel every other labelled search candidate as an annotated person, so the tiny data can be fitted."""
    real = calibrate.search_sample

    def relabelled(*args: object, **kwargs: object) -> calibrate.SearchSample:
        sample = real(*args, **kwargs)
        sample.labels = (np.arange(len(sample.labels)) % 2).astype(np.float64)
        return sample

    monkeypatch.setattr(calibrate, "search_sample", relabelled)


def test_calibrate_writes_a_checkpoint_whose_calibration_predict_uses(
    tiny_h5: Path, tiny_flic: Path, tiny_flic_zip: Path, checkpoint: Path, tmp_path: Path, half_people: None
) -> None:
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", tiny_h5, "-c", checkpoint, "--out", out, "--max-frames", "2", "--clutter", "2"]
    result = invoke(*args, "--flic", tiny_flic, "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert "fitted on 2 validation frames" in text(result) and f"wrote {out}" in text(result)
    calibration = PosePredictor.from_checkpoint(out, "cpu").calibration
    assert calibration is not None and set(calibration.joints) == {"detector", "spatial"}
    assert 0 < calibration.min_score < 1 and calibration.report["frames"] == 2
    assert calibration.report["joint_rows"] == 4  # half of the 8 training rows
    state, original = load_checkpoint(out), load_checkpoint(checkpoint)
    assert CALIBRATION_KEY not in original and state[CALIBRATION_KEY]["format"] == "cnnmrf-calibration-v1"
    assert all(torch.equal(state["model"][k], v) for k, v in original["model"].items())  # the weights are unchanged

    # predict reports calibrated scores with it
    draw_image(1, tiny_annotations(), np.random.default_rng(7)).save(tmp_path / "a.png")
    result = invoke("predict", tmp_path / "a.png", "-c", out, "--min-score", "0", "--json", "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    people = json.loads(result.stdout)["people"]
    assert people and all(0 <= p["score"] <= 1 and list(p["joint_scores"]) == list(JOINT_NAMES) for p in people)

    # an existing --out is kept without --force
    before = out.read_bytes()
    assert_one_line_error(invoke(*args, "--flic", tiny_flic), "already exists", "--force")
    assert out.read_bytes() == before
    result = invoke(*args, "--flic", tiny_flic_zip, "--force")  # FLIC.zip works as well
    assert result.exit_code == 0, result.output
    assert PosePredictor.from_checkpoint(out, "cpu").calibration.report["joint_rows"] == 1  # --val-fraction 0.1


def test_calibrate_without_the_flic_copy_is_one_line(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibrated.pt"
    result = invoke("calibrate", tiny_h5, "--flic", tmp_path / "nowhere", "-c", checkpoint, "--out", out)
    assert_one_line_error(result, "nowhere does not exist", "FLIC")
    result = invoke("calibrate", tiny_h5, "--flic", tiny_h5, "-c", checkpoint, "--out", out)
    assert_one_line_error(result, "neither a folder nor a zip archive")
    assert not out.exists() and list(tmp_path.iterdir()) == []
