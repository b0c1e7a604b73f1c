"""Benchmark `cnnmrf predict` on a video against the same frames as photos: throughput of the whole command, frames
with a person, arms PCK@0.2, the jitter of a still person with and without the filter, and peak memory on a long
720p clip."""

# Usage (from the repository root):
#   python bench/video.py [--flic ../shared/flic/FLIC] [--film battle-cry] [--frames 40] [--rate 24] [--repeats 1]
#       [--args "--search detector"] [--threads 1] [--memory-seconds 300 --memory-every 48 | --no-memory]
# The clip: --frames consecutive FLIC test-split frames of one film (by frame number; FLIC samples a film every 10th
# frame or more, and cuts between shots are frequent), encoded as H.264 (x264, CRF 18) at --rate frames/s into a
# temporary folder, beside the same frames' original JPEGs. `cnnmrf predict clip.mp4` and `cnnmrf predict photos/`
# run in fresh processes, side by side (--repeats times, alternating which goes first; medians), with the same
# --args and --threads torch threads (OMP_NUM_THREADS; 1 by default: on a 2-core machine shared with other work, two
# threads waiting on each other ran everything ~6x slower). Scored from their outputs: frames with a person; arms
# PCK@0.2 (elbows and wrists, observer-centric labels as evaluate scores them, normalised by the truth's
# left-shoulder-to-right-hip distance), for every annotated person the reported person whose torso box is centred
# nearest theirs, none counting as wrong (and for the video once more with --no-smooth). Jitter: one frame of the
# clip repeated 30 times, each with Gaussian noise (sigma 3 grey levels) and a JPEG re-encoding (quality 85-95), as
# an H.264 video; the mean frame-to-frame motion of each tracked joint, with and without the filter. Memory: a
# --memory-seconds 1280x720 clip (a FLIC frame panning slowly) predicted with --every --memory-every, and a tenth as
# long with --every a tenth as large (about as many predicted frames): peak RSS of each command.

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from cnnmrf.data.flic import FlicExample, FlicSource, observer_centric
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.joints import JOINT_NAMES

ARMS = [JOINT_NAMES.index(n) for n in ("lelb", "lwri", "relb", "rwri")]
# Runs the command line, then reports its own peak resident memory (KiB on Linux) on stderr's last line.
MEASURED = """
import resource, sys
from cnnmrf.cli.app import app
try:
    app(sys.argv[1:], prog_name="cnnmrf")
finally:
    print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def clip_frames(flic: FlicSource, film: str | None, count: int) -> tuple[str, list[str], dict[str, list[FlicExample]]]:
    """The film, ``count`` consecutive test frames of it (by frame number) and their annotated people."""
    people: dict[str, list[FlicExample]] = defaultdict(list)
    for example in flic.examples():
        if example.split == "test":
            people[example.file].append(example)
    films: dict[str, list[str]] = defaultdict(list)
    for file in people:
        films[file.rsplit("-", 1)[0]].append(file)
    film = film or max(films, key=lambda name: (len(films[name]), name))  # the film with the most test frames
    files = sorted(films[film], key=lambda f: int(f.rsplit("-", 1)[1].split(".")[0]))[:count]
    if len(files) < count:
        raise SystemExit(f"{film} has only {len(files)} test frames")
    return film, files, {f: people[f] for f in files}


def encode(path: Path, frames: list[np.ndarray], rate: int, crf: int = 18, preset: str = "medium") -> None:
    """H.264 MP4 of (H, W, 3) uint8 frames."""
    with av.open(str(path), "w") as video:
        stream = video.add_stream("libx264", rate=Fraction(rate), options={"crf": str(crf), "preset": preset})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            video.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        video.mux(stream.encode(None))


def run(args: list[str], threads: int) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) and stdout of one `cnnmrf ARGS` in a fresh process with ``threads`` torch threads."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cnnmrf {' '.join(args)} failed:\n{done.stderr}")
    return seconds, int(done.stderr.strip().splitlines()[-1].split()[1]), done.stdout


def scores(docs: list[dict], people: list[list[FlicExample]]) -> dict[str, float]:
    """Frames with a person, and arms PCK@0.2 of the reported person nearest each annotated one (misses: wrong)."""
    predicted, truth = [], []
    for doc, annotated in zip(docs, people, strict=True):
        boxes = np.array([p["box"] for p in doc["people"]]).reshape(-1, 4)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (P, 2)
        for example in annotated:
            centre = (example.torsobox[:2] + example.torsobox[2:]) / 2
            joints = np.full((len(JOINT_NAMES), 2), np.nan)
            if len(boxes):
                nearest = doc["people"][int(np.argmin(np.linalg.norm(centres - centre, axis=-1)))]
                joints = np.array([nearest["joints"][name] for name in JOINT_NAMES])
            predicted.append(joints)
            truth.append(observer_centric(example.joints))
    distances = normalized_distances(np.array(predicted), np.array(truth))[:, ARMS]  # (N, 4); inf: missed
    valid = ~np.isnan(distances)
    correct = (distances <= 0.2) & valid
    wrists, elbows = [1, 3], [0, 2]
    share = lambda cols: 100 * correct[:, cols].sum() / valid[:, cols].sum()  # noqa: E731
    return {
        "frames_with_a_person": round(100 * float(np.mean([bool(d["people"]) for d in docs])), 1),
        "annotated_people": len(truth),
        "arms_pck_0.2": round(float(share([0, 1, 2, 3])), 1),
        "wrist_pck_0.2": round(float(share(wrists)), 1),
        "elbow_pck_0.2": round(float(share(elbows)), 1),
    }


def jitter(docs: list[dict]) -> dict[str, float]:
    """Mean frame-to-frame motion of each joint of a person tracked from one frame to the next: pixels, and torso
    heights (their box's)."""
    moves, heights = [], []
    for before, after in zip(docs, docs[1:]):
        previous = {p["track"]: p for p in before["people"]}
        for person in after["people"]:
            if person["track"] in previous:
                a = np.array(list(previous[person["track"]]["joints"].values()))
                b = np.array(list(person["joints"].values()))
                moves.append(np.linalg.norm(b - a, axis=-1).mean())
                heights.append(person["box"][3] - person["box"][1])
    if not moves:
        return {"pixels": float("nan"), "torso_heights": float("nan"), "pairs": 0}
    return {
        "pixels": round(float(np.mean(moves)), 3),
        "torso_heights": round(float(np.mean(np.array(moves) / np.array(heights))), 4),
        "pairs": len(moves),
    }


def noisy_copies(frame: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` copies of a frame, each with Gaussian noise (sigma 3) and a JPEG re-encoding (quality 85-95)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        noisy = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=int(rng.integers(85, 96)))
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return out


def panning_clip(path: Path, frame: np.ndarray, seconds: float, rate: int = 24) -> None:
    """A 1280x720 H.264 clip of ``seconds``: ``frame`` enlarged to fill it, panning 1 px a frame (x264 ultrafast)."""
    wide = np.asarray(Image.fromarray(frame).resize((1280 + 400, 720 + 120), Image.BILINEAR))
    with av.open(str(path), "w") as video:
        stream = video.add_stream("libx264", rate=Fraction(rate), options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(round(seconds * rate)):
            x = abs((i % 800) - 400)  # back and forth
            window = np.ascontiguousarray(wide[60 : 60 + 720, x : x + 1280])
            video.mux(stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        video.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--film", default=None, help="default: the film with the most test frames")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rate", type=int, default=24, help="the clip's frames per second")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command (alternating; medians)")
    parser.add_argument("--args", default="", help="more options for every predict command, e.g. '--search detector'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every predict command")
    parser.add_argument("--memory-seconds", type=float, default=300.0)
    parser.add_argument("--memory-every", type=int, default=48)
    parser.add_argument("--no-memory", action="store_true", help="skip the long-clip memory measurement")
    args = parser.parse_args()
    extra = shlex.split(args.args)
    flic = FlicSource(args.flic)
    film, files, people = clip_frames(flic, args.film, args.frames)
    result: dict = {"benchmark": "video", "film": film, "frames": len(files), "rate": args.rate, "args": args.args}
    result.update(threads=args.threads, load_average_before=round(os.getloadavg()[0], 2))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "photos").mkdir()
        for file in files:
            (tmp / "photos" / file).write_bytes(flic.read_image_bytes(file))
        pictures = [np.asarray(Image.open(tmp / "photos" / f).convert("RGB")) for f in files]
        encode(tmp / "clip.mp4", pictures, args.rate)
        commands = {
            "video": ["predict", str(tmp / "clip.mp4"), "-o", str(tmp / "video"), *extra],
            "photos": ["predict", str(tmp / "photos"), "-o", str(tmp / "photos_out"), *extra],
        }
        seconds: dict[str, list[float]] = {"video": [], "photos": []}
        searched = []
        for repeat in range(args.repeats):
            for name in list(commands)[:: 1 if repeat % 2 == 0 else -1]:
                took, _, out = run(commands[name], args.threads)
                seconds[name].append(took)
                searched += [int(n) for n in re.findall(r"searched for in (\d+)\)", " ".join(out.split()))]
                print(f"{name}: {took:.1f} s", flush=True)
        video_docs = [json.loads(line) for line in (tmp / "video" / "clip.jsonl").read_text().splitlines()]
        photo_docs = [json.loads((tmp / "photos_out" / f"{Path(f).stem}.json").read_text()) for f in files]
        with av.open(str(tmp / "video" / "clip_pose.mp4")) as drawn_video:
            drawn = sum(1 for _ in drawn_video.decode(video=0))
        for name, docs in (("video", video_docs), ("photos", photo_docs)):
            median = float(np.median(seconds[name]))
            result[name] = {
                "seconds": round(median, 2),
                "frames_per_s": round(len(files) / median, 3),
                **scores(docs, [people[f] for f in files]),
            }
        result["video"].update(json_lines=len(video_docs), drawn_frames=drawn)
        result["video"]["tracks"] = len({p["track"] for d in video_docs for p in d["people"]})
        result["video"]["frames_searched"] = searched[-1] if searched else None
        result["video_over_photos_throughput"] = round(result["photos"]["seconds"] / result["video"]["seconds"], 2)
        _, _, out = run([*commands["video"], "--no-smooth", "--json"], args.threads)
        raw_docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        result["video_no_smooth"] = scores(raw_docs, [people[f] for f in files])
        print(json.dumps(result), flush=True)

        encode(tmp / "still.mp4", noisy_copies(pictures[0].astype(np.float64), 30), args.rate)
        result["jitter"] = {"frame": files[0]}
        still = ["predict", str(tmp / "still.mp4"), "-o", str(tmp / "still"), "--json", *extra]
        for name, options in (("smoothed", []), ("raw", ["--no-smooth"])):
            took, _, out = run([*still, *options], args.threads)
            result["jitter"][name] = jitter([json.loads(line) for line in out.splitlines() if line.startswith("{")])
            result["jitter"][name]["frames_per_s"] = round(30 / took, 3)  # one shot: the search every 10 frames
        print(json.dumps(result["jitter"]), flush=True)

        if not args.no_memory:
            result["memory"] = {}
            for seconds_long, every in ((args.memory_seconds / 10, max(1, args.memory_every // 10)),
                                        (args.memory_seconds, args.memory_every)):  # fmt: skip
                panning_clip(tmp / "long.mp4", pictures[0], seconds_long, args.rate)
                long = ["predict", str(tmp / "long.mp4"), "-o", str(tmp / "long"), "--every", str(every)]
                took, peak, _ = run(long, args.threads)
                lines = len((tmp / "long" / "long.jsonl").read_text().splitlines())
                result["memory"][f"{seconds_long:g}s_720p_every_{every}"] = {
                    "predicted_frames": lines,
                    "seconds": round(took, 1),
                    "peak_rss_mib": round(peak / 1024, 1),
                }
                print(json.dumps(result["memory"]), flush=True)
                shutil.rmtree(tmp / "long")
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
