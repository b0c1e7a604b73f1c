"""Tests of `cnnmrf calibrate`: labelling search candidates, person-free regions, clutter and the command itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.format import PreprocessConfig
from cnnmrf.evaluation import calibrate
from cnnmrf.evaluation.frames import (
    Frame,
    far_from_people,
    matches_person,
    person_free_region,
    split_frames,
    synthetic_clutter,
)
from cnnmrf.evaluation.options import CalibrateMinimums
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.proposals import PersonDetectorSearch
from cnnmrf.inference.search import torso_box
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, load_checkpoint
from cnnmrf.models.person import save_person_checkpoint
from tests.fixtures import draw_image, tiny_annotations
from tests.helpers import assert_one_line_error, invoke, text
from tests.test_evaluate_holdout import trained_checkpoint
from tests.test_person_search import tiny_person

K = len(JOINT_NAMES)


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


@pytest.fixture
def little_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let calibrate fit on the tiny data (8 training rows on 6 frames): one frame, person and check photo suffice."""
    monkeypatch.setattr(calibrate, "MINIMUMS", CalibrateMinimums(frames=1, people=1, check_photos=1))


@pytest.fixture
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if calibrate starts its long work (the crops and the search)."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the long work started")

    monkeypatch.setattr(calibrate, "fit_joint_calibration", started)
    monkeypatch.setattr(calibrate, "search_sample", started)


def test_calibrate_refuses_data_where_the_search_finds_nobody(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, little_evidence: None
) -> None:
    """The untrained tiny model finds none of the annotated stick figures: no person score can be fitted."""
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", tiny_h5, "-c", checkpoint, "--out", out, "--max-frames", "2", "--clutter", "2"]
    result = invoke(*args, "--flic", tiny_flic, "--val-fraction", "0.5", "--search", "scan")
    assert_one_line_error(result, "0 annotated people", "too few")
    assert not out.exists()


@pytest.fixture
def half_people(monkeypatch: pytest.MonkeyPatch, little_evidence: None) -> None:
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
    args = [
        "calibrate",
        tiny_h5,
        "-c",
        checkpoint,
        "--out",
        out,
        "--max-frames",
        "2",
        "--clutter",
        "2",
        "--search",
        "scan",
    ]
    result = invoke(*args, "--flic", tiny_flic, "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert "fitted on 2 validation frames" in text(result) and f"wrote {out}" in text(result)
    calibration = PosePredictor.from_checkpoint(out, "cpu").calibration
    assert calibration is not None and set(calibration.joints) == {"detector", "spatial"}
    assert 0 < calibration.min_score < 1 and calibration.report["frames"] == 2
    assert calibration.report["search"] == "scan" and not calibration.person.uses_evidence  # no person detector ran
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


def test_calibrate_fits_the_person_score_on_the_person_detectors_candidates(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, half_people: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_person_checkpoint(tmp_path / "person.pt", tiny_person(3.0))
    searched = []
    real = calibrate.search_sample

    def recorded(predictor: PosePredictor, *args: object, **kwargs: object) -> calibrate.SearchSample:
        searched.append(predictor.person_search)
        return real(predictor, *args, **kwargs)

    monkeypatch.setattr(calibrate, "search_sample", recorded)
    args = ["calibrate", tiny_h5, "--flic", tiny_flic, "-c", checkpoint, "--max-frames", "2", "--clutter", "2"]
    result = invoke(
        *args, "-o", tmp_path / "a.pt", "--search", "detector", "--person-checkpoint", tmp_path / "person.pt"
    )
    assert result.exit_code == 0, result.output
    assert "search detector" in text(result)
    calibration = PosePredictor.from_checkpoint(tmp_path / "a.pt", "cpu").calibration
    assert calibration.report["search"] == "detector" and calibration.person.uses_evidence
    # both searches (the fit's and the threshold check's) are the detector's, with the faces being fitted
    assert len(searched) == 2 and all(isinstance(s, PersonDetectorSearch) for s in searched)
    assert searched[0].face_geometry is not None
    assert_one_line_error(
        invoke(*args, "-o", tmp_path / "b.pt", "--search", "scan", "--person-checkpoint", tmp_path / "person.pt"),
        "--person-checkpoint is for --search detector",
    )


def test_calibrate_without_the_flic_copy_is_one_line(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibrated.pt"
    result = invoke("calibrate", tiny_h5, "--flic", tmp_path / "nowhere", "-c", checkpoint, "--out", out)
    assert_one_line_error(result, "nowhere does not exist", "FLIC")
    result = invoke("calibrate", tiny_h5, "--flic", tiny_h5, "-c", checkpoint, "--out", out)
    assert_one_line_error(result, "neither a folder nor a zip archive")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--clutter", "0"], ["--clutter 0 leaves 0 person-free photos", "at least 20 (--clutter 40 or more)"]),
        (["--clutter", "1"], ["--clutter 1 leaves 0 person-free photos"]),
        (["--clutter", "39"], ["--clutter 39 leaves 19 person-free photos"]),
        (["--max-frames", "2"], ["--max-frames 2 leaves 2 validation frames", "at least 30 frames and 20 people"]),
        ([], ["held-out rows (val_fraction 0.5, seed 0) hold 3 validation frames with 5 annotated people"]),
    ],
    ids=["clutter-0", "clutter-1", "clutter-39", "max-frames-2", "all-frames"],
)
def test_calibrate_refuses_too_little_evidence_before_the_long_work(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, no_search: None, args: list, fragments: list
) -> None:
    """The tiny data falls short of the real minimums: refused in one line, before any crop is predicted."""
    out = tmp_path / "calibrated.pt"
    result = invoke(
        "calibrate", tiny_h5, "--flic", tiny_flic, "-c", checkpoint, "-o", out, "--val-fraction", "0.5", *args
    )
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_calibrate_names_a_missing_or_damaged_frame_before_the_long_work(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, little_evidence: None, no_search: None
) -> None:
    flic = Path(shutil.copytree(tiny_flic, tmp_path / "FLIC"))
    frame = split_frames(tiny_h5, "train", holdout_rows(8, 0.5, 0)[1])[1].file  # the second validation frame
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", tiny_h5, "--flic", flic, "-c", checkpoint, "-o", out, "--val-fraction", "0.5"]
    good = (flic / "images" / frame).read_bytes()
    (flic / "images" / frame).unlink()
    assert_one_line_error(
        invoke(*args, "--clutter", "2"), f"{flic} has no images/{frame}", "the FLIC copy the dataset was made from"
    )
    for damaged in (b"not a jpeg", good[: len(good) // 2]):  # not an image; a truncated JPEG
        (flic / "images" / frame).write_bytes(damaged)
        assert_one_line_error(invoke(*args, "--clutter", "2"), f"images/{frame} of {flic}: not a readable image")
    assert not out.exists()


def test_calibrate_never_writes_into_the_installed_package(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """Not even with --force: the bundled weights keep their calibration (fitted on 395 frames)."""
    bundled = default_checkpoint()
    weights = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in bundled.parent.iterdir())
    (tmp_path / "package").symlink_to(bundled.parent.parent)  # a way into it by another name
    for out in (bundled, bundled.parent / "mine.pt", tmp_path / "package" / "weights" / "mine.pt"):
        result = invoke("calibrate", tiny_h5, "--flic", tiny_flic, "-c", checkpoint, "-o", out, "--force")
        assert_one_line_error(result, f"--out {out} is inside the installed cnnmrf package", "write it elsewhere")
    assert sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in bundled.parent.iterdir()) == weights


def test_calibrate_holds_out_the_checkpoints_rows_and_records_its_precision(
    tiny_h5: Path,
    tiny_flic: Path,
    tiny_config: PreprocessConfig,
    tmp_path: Path,
    half_people: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed3 = trained_checkpoint(tmp_path / "seed3.pt", tiny_config, val_fraction=0.5, seed=3)
    real, fitted_rows = calibrate.fit_joint_calibration, []

    def recorded(predictor: PosePredictor, data: Path, split: str, rows: np.ndarray) -> object:
        fitted_rows.append(rows.tolist())
        return real(predictor, data, split, rows)

    monkeypatch.setattr(calibrate, "fit_joint_calibration", recorded)
    args = ["calibrate", tiny_h5, "--flic", tiny_flic, "-c", seed3, "--max-frames", "2", "--clutter", "2"]
    result = invoke(*args, "-o", tmp_path / "a.pt")
    assert result.exit_code == 0, result.output
    assert "held out by val_fraction 0.5, seed 3 (the checkpoint's training run); precision fp32" in text(result)
    report = PosePredictor.from_checkpoint(tmp_path / "a.pt", "cpu").calibration.report
    assert (report["val_fraction"], report["seed"], report["held_out_from"]) == (0.5, 3, "checkpoint")
    assert report["precision"] == "fp32" and report["precision_reason"].startswith("auto: ")  # pinned to fp32
    assert fitted_rows == [holdout_rows(8, 0.5, 3)[1].tolist()] != [holdout_rows(8, 0.5, 0)[1].tolist()]

    assert_one_line_error(
        invoke(*args, "-o", tmp_path / "b.pt", "--seed", "0"),
        "--seed 0 differs from the checkpoint's training seed 3 (its validation rows would include rows it trained "
        "on); pass --force to use it anyway",
    )
    assert not (tmp_path / "b.pt").exists() and len(fitted_rows) == 1  # refused before the work
    result = invoke(*args, "-o", tmp_path / "b.pt", "--seed", "0", "--force", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "(given with --force, unlike the checkpoint's training run); precision bf16" in text(result)
    report = PosePredictor.from_checkpoint(tmp_path / "b.pt", "cpu").calibration.report
    assert (report["seed"], report["held_out_from"], report["precision"]) == (0, "forced", "bf16")
    assert report["precision_reason"] == "asked for (--precision bf16)"
    assert fitted_rows[1] == holdout_rows(8, 0.5, 0)[1].tolist()


def test_two_calibrates_into_one_out_at_once_one_is_refused(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, half_people: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second calibrate starts while the first searches, past its checks (no --out yet): it is refused at once with
    one line, and --out holds the first's calibration."""
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", tiny_h5, "--flic", tiny_flic, "-c", checkpoint, "-o", out, "--val-fraction", "0.5"]
    real, second = calibrate.search_sample, {}

    def search_while_another_starts(*a: object, **kw: object) -> calibrate.SearchSample:
        if "result" not in second:
            second["result"] = None  # once: the second's own search (if it got that far) runs as it is
            second["result"] = invoke(*args, "--max-frames", "1", "--clutter", "4")
        return real(*a, **kw)

    monkeypatch.setattr(calibrate, "search_sample", search_while_another_starts)
    first = invoke(*args, "--max-frames", "2", "--clutter", "2")
    assert first.exit_code == 0, first.output
    assert_one_line_error(second["result"], f"{out} is being written by another cnnmrf command", "another --out")
    assert PosePredictor.from_checkpoint(out, "cpu").calibration.report["frames"] == 2  # the first's
    assert [p.name for p in tmp_path.iterdir()] == ["calibrated.pt"]  # no lock file left


@pytest.mark.parametrize(
    "option, value",
    [
        ("--val-fraction", "nan"),
        ("--val-fraction", "2"),
        ("--val-fraction", "-0.5"),
        ("--seed", "-1"),
        ("--max-frames", "-1"),
        ("--clutter", "-1"),
        ("--max-false-rate", "nan"),
        ("--max-false-rate", "1"),
        ("--max-false-rate", "-0.1"),
    ],
)
def test_calibrate_numeric_options_out_of_range_are_usage_errors(
    tiny_h5: Path, tiny_flic: Path, checkpoint: Path, tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "calibrated.pt"
    result = invoke("calibrate", tiny_h5, "--flic", tiny_flic, "-c", checkpoint, "-o", out, option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in text(result) and "Traceback" not in result.output
    assert not out.exists()
