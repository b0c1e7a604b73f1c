"""Tests for the video pipeline's library parts: the One Euro filter, reading and writing videos with PyAV, the
tracker (when the person search runs, how boxes follow people, track ids) and the per-frame document."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.inference.outputs import ImagePrediction, Person
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.smoothing import JointSmoother, SmoothingConfig, one_euro_step, smoothing_factor
from cnnmrf.inference.tracking import FramePrediction, PoseTracker, TrackingConfig
from cnnmrf.inference.video import VideoWriter, open_video
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import checkpoint_state, save_checkpoint
from tests.fixtures import read_video, red_blob_photo, torso_finder_model, write_video

TORSO = JOINT_NAMES.index("torso")


@pytest.fixture(scope="module")
def finder(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> PosePredictor:
    """A predictor whose detector takes red blobs for torsos (uncalibrated: the best candidate per frame)."""
    path = tmp_path_factory.mktemp("finder") / "finder.pt"
    save_checkpoint(path, checkpoint_state(torso_finder_model(tiny_config.input_size), tiny_config))
    return PosePredictor.from_checkpoint(path, "cpu")


# ---- smoothing ---------------------------------------------------------------------------------------------------


def one_euro_reference(
    points: np.ndarray, times: np.ndarray, scale: float, config: SmoothingConfig
) -> np.ndarray:  # (T, 2) -> (T, 2)
    """The One Euro filter on one 2-D point, step by step as Casiez et al. write it (speed: the 2-D velocity's norm in
    ``scale`` units)."""

    def alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out, speed = [points[0].copy()], np.zeros(2)
    for point, dt in zip(points[1:], np.diff(times)):
        a = alpha(config.speed_cutoff, dt)
        speed = a * (point - out[-1]) / dt + (1 - a) * speed
        cutoff = config.min_cutoff + config.beta * float(np.hypot(*speed)) / scale
        b = alpha(cutoff, dt)
        out.append(b * point + (1 - b) * out[-1])
    return np.array(out)


def test_the_vectorised_filter_matches_the_papers_step_by_step_filter() -> None:
    rng = np.random.default_rng(0)
    config = SmoothingConfig(min_cutoff=0.7, beta=2.0, speed_cutoff=1.3)
    frames, people = 30, 3
    times = np.cumsum(rng.uniform(0.02, 0.2, frames))  # uneven steps: --every, dropped frames
    joints = np.cumsum(rng.normal(0, 4, (frames, people, len(JOINT_NAMES), 2)), axis=0) + 100  # (T, P, K, 2)
    scale = np.array([40.0, 90.0, 150.0])  # (P,) torso heights
    smoother = JointSmoother(config)
    got = np.stack([smoother.smooth([7, 3, 9], joints[t], scale, float(times[t])) for t in range(frames)])
    for p in range(people):
        for k in range(len(JOINT_NAMES)):
            expected = one_euro_reference(joints[:, p, k], times, scale[p], config)
            np.testing.assert_allclose(got[:, p, k], expected, rtol=1e-9, atol=1e-9)


def test_the_filter_steadies_a_still_joint_and_follows_a_moving_one() -> None:
    rng = np.random.default_rng(1)
    times = np.arange(96) / 24.0  # 4 s at 24 frames/s
    still = 100 + rng.normal(0, 2.0, (96, 1, 1, 2))  # (T, 1, 1, 2) a still joint, 2 px of noise
    smoother = JointSmoother()
    steady = np.stack([smoother.smooth([0], still[t], np.array([100.0]), times[t]) for t in range(96)])
    motion = lambda x: float(np.linalg.norm(np.diff(x[24:], axis=0), axis=-1).mean())  # noqa: E731
    assert motion(steady) < 0.3 * motion(still)
    # a joint moving 2 torso heights a second (200 px/s): followed within a few pixels once the filter caught up
    moving = (100 + 200 * times)[:, None, None, None] * np.ones((1, 1, 1, 2))  # (T, 1, 1, 2)
    smoother = JointSmoother()
    followed = np.stack([smoother.smooth([0], moving[t], np.array([100.0]), times[t]) for t in range(96)])
    assert np.abs(followed - moving)[24:].max() < 0.1 * 100  # lag under a tenth of a torso height


def test_the_smoother_starts_new_tracks_raw_and_forgets_lost_ones() -> None:
    smoother = JointSmoother()
    first = np.full((1, len(JOINT_NAMES), 2), 10.0)
    np.testing.assert_array_equal(smoother.smooth([0], first, np.array([50.0]), 0.0), first)
    moved = first + 30
    both = np.concatenate([moved, moved + 100])  # track 0 continues, track 1 is new
    out = smoother.smooth([0, 1], both, np.array([50.0, 50.0]), 0.04)
    assert (out[0] > first[0]).all() and (out[0] < moved[0]).all()  # smoothed: between the two
    np.testing.assert_array_equal(out[1], both[1])  # new: as predicted
    smoother.smooth([1], both[1:], np.array([50.0]), 0.08)  # track 0 not seen: forgotten
    np.testing.assert_array_equal(smoother.smooth([0], first, np.array([50.0]), 0.12), first)
    assert smoothing_factor(1.0, 0.0) == 0.0 and 0.0 < smoothing_factor(1.0, 1 / 24) < 1.0
    with pytest.raises(ValueError):
        SmoothingConfig(min_cutoff=0.0)
    step, speed = one_euro_step(first, first, np.zeros_like(first), np.array([0.04]), np.array([50.0]), smoother.config)
    np.testing.assert_array_equal(step, first) and np.testing.assert_array_equal(speed, 0 * first)


# ---- reading and writing -----------------------------------------------------------------------------------------


def reddest(image: Image.Image) -> tuple[int, int]:
    """(x, y) of the pixel where red most exceeds green (the blob of :func:`red_blob_photo`)."""
    pixels = np.asarray(image, dtype=np.float64)
    red = pixels[..., 0] - pixels[..., 1]  # (H, W)
    y, x = np.unravel_index(red.argmax(), red.shape)
    return int(x), int(y)


def test_videos_are_read_in_order_with_their_times_and_upright(tmp_path: Path) -> None:
    pictures = [red_blob_photo(30 + 10 * i, 60) for i in range(10)]
    write_video(tmp_path / "a.mkv", pictures, rate=20)
    with open_video(tmp_path / "a.mkv") as reader:
        frames = list(reader.frames(start=0.1, end=0.4, every=2))  # times 0.1, 0.15, ..., 0.35: every other
        assert reader.info.rate == 20 and reader.info.size == (160, 120) and not reader.info.exact
        assert reader.ended_early() == ""
    assert [f.number for f in frames] == [2, 4, 6] and [f.time for f in frames] == pytest.approx([0.1, 0.2, 0.3])
    assert [reddest(f.image) for f in frames] == [pytest.approx((x, 60), abs=2) for x in (50, 70, 90)]
    write_video(tmp_path / "turned.mp4", pictures[:2], rotation=90)  # a phone's portrait video
    with open_video(tmp_path / "turned.mp4") as reader:
        [first, _] = list(reader.frames())
    assert first.image.size == (120, 160)  # shown upright: turned 90 degrees counter-clockwise ...
    assert reddest(first.image) == pytest.approx((60, 159 - 30), abs=2)  # ... so (x, y) is now at (y, 159 - x)


def test_the_writer_keeps_size_and_rate_and_pads_odd_sides(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "o.mp4", (161, 121), Fraction(30000, 1001))
    for i in range(5):
        writer.write(red_blob_photo(40 + 10 * i, 60, size=(161, 121)))
    writer.close()
    frames, rate = read_video(tmp_path / "o.mp4")
    assert len(frames) == 5 and frames[0].shape == (122, 162, 3) and rate == Fraction(30000, 1001)


def test_unreadable_videos_are_one_clear_reason(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    cases = {"missing.mp4": "no such file", "empty.mp4": "an empty file", "noise.mp4": "not a readable video"}
    for name, reason in cases.items():
        with pytest.raises(CnnmrfError, match=reason), open_video(tmp_path / name):
            pass
    write_video(tmp_path / "strip.mkv", [Image.new("RGB", (640, 16))])
    with pytest.raises(CnnmrfError, match="frames are 640x16: sides more than 20 to 1"):
        open_video(tmp_path / "strip.mkv").__enter__()


# ---- tracking ----------------------------------------------------------------------------------------------------


def test_the_search_runs_every_n_frames_and_boxes_follow_the_person_in_between(finder: PosePredictor) -> None:
    tracker = PoseTracker(finder, TrackingConfig(detect_every=4))
    searched, centres, ids = [], [], []
    for i in range(10):
        cx = 40.0 + 6 * i  # the torso moves 6 px a frame
        people, tracks, search = tracker.step(red_blob_photo(cx, 60))
        [person] = people
        searched.append(search)
        ids.extend(tracks)
        centres.append(person.joints[TORSO])
        assert person.source == ("track" if not search else person.source)
    assert searched == [True, False, False, False, True, False, False, False, True, False]
    assert tracker.searches == 3 and ids == [0] * 10  # one person, one track throughout
    np.testing.assert_allclose(centres, [(40.0 + 6 * i, 60.0) for i in range(10)], atol=2.0)


def test_a_shot_change_ends_the_tracks_and_searches_again(finder: PosePredictor) -> None:
    tracker = PoseTracker(finder, TrackingConfig(detect_every=100))
    assert tracker.step(red_blob_photo(50, 60))[1:] == ([0], True)
    assert tracker.step(red_blob_photo(52, 60))[1:] == ([0], False)
    cut = Image.fromarray(255 - np.asarray(red_blob_photo(110, 40)))  # another shot: bright, the person elsewhere
    assert tracker.step(cut)[1:] == ([1], True)


def test_a_given_box_is_one_person_followed_and_never_searched(finder: PosePredictor) -> None:
    tracker = PoseTracker(finder, TrackingConfig(detect_every=2), box=np.array([40.0, 45, 60, 75]))
    for i in range(5):
        [person], tracks, searched = tracker.step(red_blob_photo(50 + 4 * i, 60))
        assert tracks == [0] and not searched and person.source == ("given" if i == 0 else "track")
        np.testing.assert_allclose(person.joints[TORSO], (50 + 4 * i, 60), atol=2.0)
    assert tracker.searches == 0
    with pytest.raises(CnnmrfError, match="outside"):
        PoseTracker(finder, box=np.array([400.0, 45, 420, 75])).step(red_blob_photo(50, 60))


def test_the_frame_document_adds_frame_time_and_track_ids() -> None:
    person = Person(np.array([1.0, 2, 3, 4]), "track", np.zeros((10, 2)), np.zeros(10), 0.5, np.full(10, 0.25))
    prediction = ImagePrediction("clip.mp4", (160, 120), [person], "fp32", "detector")
    document = FramePrediction(prediction, 12, 0.123456, [4]).to_dict()
    assert list(document) == ["format", "file", "frame", "time", "image_size", "precision", "search", "people"]
    assert document["frame"] == 12 and document["time"] == 0.1235 and document["search"] == "detector"
    assert list(document["people"][0]) == ["track", "box", "score", "source", "joints", "joint_scores"]
    assert document["people"][0]["track"] == 4 and document["people"][0]["source"] == "track"
