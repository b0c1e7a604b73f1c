"""Tests for `cnnmrf predict` on videos: a document and a drawn frame per frame, --json, --every/--start/--end,
steadier joints with the filter, videos told from images by content, the replace rules, and bad videos (one line each,
never a partial output); Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cnnmrf import files
from cnnmrf.cli.predict_files import is_video
from cnnmrf.cli.predict_video import DETECT_EVERY, SMOOTH_BETA, SMOOTH_CUTOFF, expected_frames
from cnnmrf.inference.smoothing import SmoothingConfig
from cnnmrf.inference.tracking import TrackingConfig, VideoOptions
from cnnmrf.inference.video import VideoInfo
from cnnmrf.joints import JOINT_NAMES
from tests.fixtures import draw_image, read_video, tiny_annotations, write_video
from tests.helpers import assert_one_line_error, invoke, text

KEYS = ["format", "file", "frame", "time", "image_size", "precision", "search", "people"]
PERSON_KEYS = ["track", "box", "score", "source", "joints", "joint_scores"]


def person_frames(count: int, seed: int = 7, shift: int = 2) -> list[Image.Image]:
    """``count`` 160x120 frames of the tiny dataset's stick-figure person (image 1) moving ``shift`` px a frame."""
    photo = np.asarray(draw_image(1, tiny_annotations(), np.random.default_rng(seed)))
    return [Image.fromarray(np.roll(photo, shift * i, axis=1)) for i in range(count)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-frame H.264 MP4 (160x120, 24 frames/s) of a person walking right. Read-only."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", person_frames(8))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def only_outputs(out: Path) -> list[str]:
    """The names in ``out`` (none if it is gone), after checking that no temporary is left."""
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    return names


def test_a_video_gives_one_document_and_one_drawn_frame_per_frame(clip: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("predict", clip, "-c", checkpoint, "-o", out)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert only_outputs(out) == ["clip.jsonl", "clip_pose.mp4"]
    docs = read_lines(out / "clip.jsonl")
    assert [d["frame"] for d in docs] == list(range(8))
    assert [d["time"] for d in docs] == pytest.approx([i / 24 for i in range(8)], abs=1e-3)
    for doc in docs:
        assert list(doc) == KEYS and doc["file"] == str(clip) and doc["image_size"] == [160, 120]
        [person] = doc["people"]  # uncalibrated: the best candidate of a search, then that person tracked
        assert (
            list(person) == PERSON_KEYS and person["track"] == 0 and person["source"] in ("detector", "face", "track")
        )
        joints = np.array(list(person["joints"].values()))
        assert list(person["joints"]) == list(JOINT_NAMES) and (joints >= 0).all() and (joints <= [159, 119]).all()
    drawn, rate = read_video(out / "clip_pose.mp4")
    assert len(drawn) == 8 and drawn[0].shape == (120, 160, 3) and rate == 24
    source, _ = read_video(clip)
    assert all(np.abs(d.astype(int) - s).max() > 100 for d, s in zip(drawn, source))  # skeletons drawn on each
    assert "clip.mp4: 8 frame(s), a person in 8, 1 person tracked (searched for in 1)" in text(result)
    assert "1 file(s) (1 video(s)): 1 predicted, 0 failed" in text(result)
    again = invoke("predict", clip, "-c", checkpoint, "-o", out, "--json")  # replaces its own outputs; streams them
    assert again.exit_code == 0 and again.stderr.startswith("note: this checkpoint is not calibrated"), again.output
    assert [json.loads(line) for line in again.stdout.splitlines()] == read_lines(out / "clip.jsonl") == docs


def test_every_start_and_end_choose_the_frames(checkpoint: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "long.mkv", person_frames(24, shift=1))
    out = tmp_path / "out"
    result = invoke("predict", video, "-c", checkpoint, "-o", out, "--every", "3", "--start", "0.25", "--end", "0.8")
    assert result.exit_code == 0, result.output
    docs = read_lines(out / "long.jsonl")
    assert [d["frame"] for d in docs] == [6, 9, 12, 15, 18]  # times 0.25 <= t < 0.8, every third from the first
    assert [d["time"] for d in docs] == pytest.approx([f / 24 for f in (6, 9, 12, 15, 18)], abs=1e-3)
    drawn, rate = read_video(out / "long_pose.mp4")
    assert len(drawn) == 5 and rate == 8  # the source's rate over --every
    result = invoke("predict", video, "-c", checkpoint, "-o", out, "--start", "5")
    assert_one_line_error(result, "long.mkv: no frame between --start 5 s and its end (the video is 1.00 s long)")
    result = invoke("predict", video, "-c", checkpoint, "-o", out, "--start", "0.5", "--end", "0.5")
    assert_one_line_error(result, "--end 0.5 must be after --start 0.5")


def test_the_filter_steadies_the_joints_of_a_still_person(tmp_path: Path) -> None:
    """The bundled model on the astronaut filmed still with sensor noise: the joints of each frame's own prediction
    jitter by several pixels from frame to frame, the filtered ones by far less."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256)), dtype=np.float64)
    noisy = [np.clip(photo + np.random.default_rng(i).normal(0, 8, photo.shape), 0, 255) for i in range(16)]
    video = write_video(tmp_path / "still.mp4", [Image.fromarray(n.astype(np.uint8)) for n in noisy])

    def jitter(*options: str) -> float:
        # her torso box (the README's, halved), then followed: one pass of the model per frame
        args = ["predict", video, "-o", tmp_path / "out", "--json", "--box", "71,135,144,245", *options]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        docs = [json.loads(line) for line in result.stdout.splitlines()]
        joints = np.array([list(d["people"][0]["joints"].values()) for d in docs])  # (T, K, 2)
        assert len(docs) == 16 and {d["people"][0]["track"] for d in docs} == {0}
        return float(np.linalg.norm(np.diff(joints, axis=0), axis=-1).mean())

    raw, steady = jitter("--no-smooth"), jitter()
    assert raw > 2.0 and steady < 0.5 * raw, (raw, steady)
    assert jitter("--smooth-cutoff", "0.3") < steady  # a lower cutoff: steadier still


def test_videos_are_told_from_images_by_content(clip: Path, checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "movie.jpg").write_bytes(clip.read_bytes())  # a video whatever its name
    draw_image(1, tiny_annotations(), np.random.default_rng(7)).save(tmp_path / "still.mp4", format="PNG")
    assert is_video(tmp_path / "movie.jpg") and not is_video(tmp_path / "still.mp4")
    assert is_video(tmp_path / "missing.mov") and not is_video(tmp_path / "missing.png")  # by name when unreadable
    out = tmp_path / "out"
    result = invoke("predict", tmp_path / "movie.jpg", tmp_path / "still.mp4", "-c", checkpoint, "-o", out)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert only_outputs(out) == ["movie.jsonl", "movie_pose.mp4", "still.json", "still_pose.png"]
    assert len(read_lines(out / "movie.jsonl")) == 8
    assert json.loads((out / "still.json").read_text())["image_size"] == [160, 120]  # predicted as the image it is
    # a folder gives its images and videos; in --out, earlier drawn videos are skipped
    (tmp_path / "movie.jpg").rename(out / "movie.mp4")
    result = invoke("predict", out, "-c", checkpoint, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["file"] for line in result.stdout.splitlines()} == {str(out / "movie.mp4")}
    assert "movie-2.jsonl" not in only_outputs(out)


def test_a_file_predict_did_not_write_is_replaced_only_with_force(clip: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.jsonl").write_text('{"mine": true}\n')
    result = invoke("predict", clip, "-c", checkpoint, "-o", out)
    assert_one_line_error(result, f"{out / 'clip.jsonl'} was not written by cnnmrf predict; pass --force")
    assert only_outputs(out) == ["clip.jsonl"] and (out / "clip.jsonl").read_text() == '{"mine": true}\n'
    assert invoke("predict", clip, "-c", checkpoint, "-o", out, "--force").exit_code == 0
    assert len(read_lines(out / "clip.jsonl")) == 8


def test_a_full_disk_writes_neither_file_and_keeps_the_earlier_pair(
    clip: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert invoke("predict", clip, "-c", checkpoint, "-o", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    result = invoke("predict", clip, "-c", checkpoint, "-o", out, "--every", "2")  # would replace both
    assert_one_line_error(result, f"clip.mp4: cannot write {out / 'clip.jsonl'}: the disk is full")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # and no temporary left


def test_the_progress_bar_expects_the_frames_the_options_choose() -> None:
    info = VideoInfo((160, 120), Fraction(24), 48, True, 2.0)
    assert expected_frames(info, VideoOptions()) == 48
    assert expected_frames(info, VideoOptions(start=0.5, end=1.5, every=4)) == 6  # frames 12..35, every fourth
    assert expected_frames(info, VideoOptions(start=9.0)) == 1  # none: the bar still has a total
    assert expected_frames(VideoInfo((160, 120), Fraction(24), None, False, None), VideoOptions()) is None


def bad_videos(folder: Path) -> dict[str, str]:
    """Files that are not usable videos, each with what its error line says."""
    frames = person_frames(12)
    whole = write_video(folder / "whole.mp4", frames).read_bytes()  # its index at the end: a cut loses it
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with wave.open(str(folder / "sound.mp4"), "wb") as sound:  # a WAV file: audio only
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(bytes(1600))
    (folder / "empty.mp4").write_bytes(b"")
    write_video(folder / "frameless.avi", [], codec="mpeg4")
    (folder / "whole.mp4").unlink()
    return {
        "truncated.mp4": "not a readable video",
        "corrupt.mp4": "not a readable video",
        "sound.mp4": "no video stream in this file (it holds audio)",
        "empty.mp4": "an empty file (0 bytes), not a video",
        "frameless.avi": "no frame could be decoded: it holds no frames",
    }


def test_bad_videos_fail_one_line_each_leaving_nothing(checkpoint: Path, tmp_path: Path) -> None:
    expected = bad_videos(tmp_path)
    out = tmp_path / "out"
    result = invoke("predict", *(tmp_path / name for name in expected), "-c", checkpoint, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, (name, reason) in zip(lines, expected.items()):
        assert line.startswith(f"error: {tmp_path / name}: {reason}"), line
    assert "5 file(s) (5 video(s)): 0 predicted, 5 failed; nothing written" in text(result)
    assert not out.exists()  # the folder it made, left empty, is removed


def test_a_video_that_ends_early_keeps_what_was_read(checkpoint: Path, tmp_path: Path) -> None:
    """Its index first (faststart), cut off inside its 13th frame: the frames before the cut are predicted, one
    warning."""
    whole = write_video(tmp_path / "whole.mp4", person_frames(24), options={"movflags": "+faststart"})
    with av.open(str(whole)) as video:
        cut = [packet.pos for packet in video.demux(video.streams.video[0])][12] + 10  # bytes
    (tmp_path / "cut.mp4").write_bytes(whole.read_bytes()[:cut])
    out = tmp_path / "out"
    result = invoke("predict", tmp_path / "cut.mp4", "-c", checkpoint, "-o", out)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {tmp_path / 'cut.mp4'}: the video ends early (")
    assert "of the 24 frames its header announces decoded" in warning
    docs = read_lines(out / "cut.jsonl")
    assert 0 < len(docs) < 24 and [d["frame"] for d in docs] == list(range(len(docs)))
    assert len(read_video(out / "cut_pose.mp4")[0]) == len(docs)  # the pair agrees


def test_ctrl_c_stops_a_video_at_once_leaving_nothing(checkpoint: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", person_frames(40))
    out = tmp_path / "out"
    slow = (
        "import sys, time\n"
        "from cnnmrf.inference import tracking\n"
        "step = tracking.PoseTracker.step\n"
        "tracking.PoseTracker.step = lambda self, image: (time.sleep(0.2), step(self, image))[1]\n"
        "from cnnmrf.cli.app import app\n"
        "app(sys.argv[1:], prog_name='cnnmrf')\n"
    )
    command = [sys.executable, "-c", slow, "predict", str(video), "-c", str(checkpoint), "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(p.name.endswith(".tmp") for p in out.iterdir()):  # frames are being written
            break
        time.sleep(0.05)
    time.sleep(0.5)
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and err.decode().strip().splitlines() == ["error: interrupted"], err
    assert only_outputs(out) == []


def test_the_command_lines_defaults_are_the_libraries() -> None:
    """--help loads no numpy, so the CLI repeats the defaults of the filter and the tracker: they must agree."""
    assert (SMOOTH_CUTOFF, SMOOTH_BETA) == (SmoothingConfig().min_cutoff, SmoothingConfig().beta)
    assert TrackingConfig().detect_every == DETECT_EVERY
