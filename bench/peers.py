"""`cnnmrf predict` against MediaPipe Pose on the same whole FLIC frames: marginal throughput, people found, PCK."""

# Usage (from the repository root):
#   python bench/peers.py [--flic ../shared/flic/FLIC] [--split val|test] [-n 40] [--repeats 3] [--threads T]
#                         [--search scan|detector] [--predict-args "--min-score 0.5"] [--peer-python PY]
# Both tools get the same n whole FLIC frames (720x480 JPEGs, read from the FLIC folder; --split val, the default:
# frames holding the held-out rows of the checkpoint's training run; test: FLIC's test frames, for the final report).
#
# Throughput, the whole command as a user runs it: `cnnmrf predict FILES --out DIR --json --search S` (the console
# script, a fresh process: start-up, reading, decoding, search, verification, drawing and writing the PNG and JSON)
# on the n frames and on the first 4, marginal rate (n - 4) / (t_n - t_4) from the medians of --repeats runs each.
# The peer, MediaPipe Pose 0.10.21 (legacy `solutions.pose`, model_complexity 1, static_image_mode: its person
# detector runs on every photo, no tracking between unrelated photos), runs in a virtual environment of its own
# (--peer-python; made by `python3 -m venv ~/cnnmrf-runs/mp-venv && ~/cnnmrf-runs/mp-venv/bin/pip install
# mediapipe==0.10.21`; absent: the peer is skipped, saying so) as a small script (PEER below, written to a temporary
# file): each file read with cv2, converted to RGB, to 33 landmarks in pixels, nothing written; the same n vs 4
# processes, timed the same way (whole process), and also in-process after a warm-up photo. --threads T pins both
# tools' processes to T cores (sched_setaffinity) and sets OMP_NUM_THREADS=T (torch's threads); default all cores.
#
# Accuracy, over every annotated person of the frames (FLIC labels one to three per frame):
# - found: a reported torso box matches theirs (cnnmrf.evaluation.frames.matches_person: centre within half their
#   torso-box height, height 0.7-1.43x), as bench/proposals.py counts; the closest such reported person's joints are
#   scored (bench/scales.py's assign). cnnmrf reports torso boxes; MediaPipe reports one person, whose torso box is
#   built from its landmarks as cnnmrf re-fits its own boxes to its predicted torso: centred on the mean of both
#   shoulders and hips, as tall as the distance between the shoulders' and the hips' midpoints, 2:3 wide
#   (cnnmrf.inference.search.torso_box).
#   found_by_lsho_rhip, a looser second test for both: some reported person's left shoulder and right hip both lie
#   within half the annotated torso-box height of the truth's.
# - PCK at r = 0.05, 0.1, 0.2 of wrists, elbows, their mean, and the mean over all 10 joints and over the 8 arm and hip
#   joints, FLIC's normaliser (the true lsho-rhip distance), a person not found counting wrong at every joint.
# MediaPipe's landmarks as FLIC's joints (MAPPINGS): lsho lelb lwri rsho relb rwri lhip rhip nose = its left_shoulder
# (11), left_elbow (13), left_wrist (15), right_ (12, 14, 16), left_hip (23), right_hip (24), nose (0), torso = mean of
# the four; MediaPipe's left is the person's own, as FLIC's raw labels are, and the truth here is observer-centric as
# the checkpoint's (MODEC's rule: a person seen from behind has the arm labels swapped), so the same rule is applied to
# MediaPipe's joints. The JSON also scores the other two readings (no rule; left and right swapped) to show that this
# one scores best.

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scales import FLIC, assign, flic_frames, summarise  # bench/scales.py, beside this script

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.flic import FlicSource, observer_centric
from cnnmrf.evaluation.frames import Frame
from cnnmrf.inference.search import torso_box
from cnnmrf.joints import JOINT_NAMES, TORSO_PARTS
from cnnmrf.models.checkpoint import load_checkpoint, preprocess_from_checkpoint

FEW = 4  # the small run of the marginal rate
THRESHOLDS = (0.05, 0.1, 0.2)
PEER_PYTHON = Path("~/cnnmrf-runs/mp-venv/bin/python").expanduser()
# MediaPipe Pose landmark per FLIC joint (lsho lelb lwri rsho relb rwri lhip rhip nose; torso: the four's mean).
MAPPINGS = {
    "anatomical": (11, 13, 15, 12, 14, 16, 23, 24, 0),
    "mirrored": (12, 14, 16, 11, 13, 15, 24, 23, 0),
}
PEER = """
import json, sys, time
import cv2
import mediapipe as mp

complexity, files = int(sys.argv[1]), sys.argv[2:]
pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=complexity)

def landmarks(path):
    image = cv2.imread(path)
    height, width = image.shape[:2]
    found = pose.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).pose_landmarks
    return None if found is None else [[p.x * width, p.y * height, p.visibility] for p in found.landmark]

landmarks(files[0])  # warm-up
start = time.perf_counter()
found = {path: landmarks(path) for path in files}
seconds = time.perf_counter() - start
print(json.dumps({"mediapipe": mp.__version__, "seconds": seconds, "landmarks": found}))
"""


def run(command: list[str], threads: int) -> tuple[float, str]:
    """Wall seconds and stdout of a command in a fresh process, on ``threads`` cores (0: all)."""
    env = dict(os.environ)
    cores = sorted(os.sched_getaffinity(0))[:threads] if threads else None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=pin if threads else None)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{shlex.join(command[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, done.stdout


def marginal(times: dict[int, list[float]], n: int) -> dict:
    """The marginal rate (n - FEW) / (t_n - t_FEW) from the median times, and the times."""
    t_n, t_few = float(np.median(times[n])), float(np.median(times[FEW]))
    return {
        f"seconds_{n}": round(t_n, 2),
        f"seconds_{FEW}": round(t_few, 2),
        "runs": {str(k): [round(t, 2) for t in v] for k, v in times.items()},
        "marginal_images_per_s": round((n - FEW) / max(t_n - t_few, 1e-9), 3),
    }


def score(frames: list[Frame], people: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """People found and PCK of the reported (boxes (N, 4), joints (N, K, 2)) per frame file, and the unannotated."""
    found, pred, truth, unannotated, near = [], [], [], 0, []
    for frame in frames:
        boxes, joints = people[frame.file]
        hit, mine, extra = assign(boxes, joints, frame.boxes)
        found.append(hit)
        pred.append(mine)
        truth.append(frame.joints)
        unannotated += extra
        near.append(near_joints(joints, frame))
    hits = np.concatenate(near)
    return {
        **summarise(found, pred, truth, THRESHOLDS),
        "found_by_lsho_rhip": round(float(hits.mean()), 4) if hits.size else None,
        "reported_unannotated": unannotated,
    }


def near_joints(joints: np.ndarray, frame: Frame) -> np.ndarray:
    """(P,) whether some reported person's left shoulder and right hip both lie within half a torso-box height of an
    annotated person's (the looser, secondary test of a person found; no one-to-one assignment)."""
    a, b = JOINT_NAMES.index("lsho"), JOINT_NAMES.index("rhip")
    height = frame.boxes[:, 3] - frame.boxes[:, 1]  # (P,)
    gaps = np.linalg.norm(np.asarray(joints)[:, None, [a, b]] - frame.joints[None, :, [a, b]], axis=-1)  # (N, P, 2)
    return (gaps.max(axis=-1) < 0.5 * height[None]).any(axis=0)


def cnnmrf_people(stdout: str, images: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each frame's reported torso boxes and joints from `predict --json`'s JSON Lines."""
    people = {}
    for line in stdout.splitlines():
        if line.strip():
            document = json.loads(line)
            found = document["people"]
            boxes = np.array([p["box"] for p in found]).reshape(-1, 4)
            joints = np.array([[p["joints"][j] for j in JOINT_NAMES] for p in found]).reshape(-1, len(JOINT_NAMES), 2)
            people[str(Path(document["file"]).relative_to(images))] = (boxes, joints)
    return people


def mediapipe_joints(landmarks: list | None, mapping: tuple[int, ...], rule: bool) -> np.ndarray:
    """(1, K, 2) FLIC joints of MediaPipe's one person (torso: the mean of both shoulders and hips), (0, K, 2) if
    none; ``rule``: MODEC's observer-centric rule applied to them."""
    if landmarks is None:
        return np.zeros((0, len(JOINT_NAMES), 2))
    points = np.asarray(landmarks, dtype=np.float64)[list(mapping), :2]  # (9, 2)
    joints = np.concatenate([points, points[list(TORSO_PARTS)].mean(axis=0, keepdims=True)])[None]
    return observer_centric(joints) if rule else joints


def mediapipe_box(joints: np.ndarray) -> np.ndarray:
    """(N, 4) torso boxes of (N, K, 2) joints: centred on the torso joint, as tall as the shoulders' midpoint is far
    from the hips' (as cnnmrf.inference.search.box_from_joints re-fits boxes, without its bound on the change)."""
    lsho, rsho, lhip, rhip = TORSO_PARTS
    boxes = []
    for person in joints:
        height = np.linalg.norm(person[[lsho, rsho]].mean(axis=0) - person[[lhip, rhip]].mean(axis=0))
        boxes.append(torso_box(*person[-1], max(float(height), 1e-6)))
    return np.array(boxes).reshape(-1, 4)


def score_mediapipe(frames: list[Frame], files: list[str], landmarks: dict, checkpoint: Path) -> dict:
    """:func:`score` of MediaPipe's people read as FLIC joints: anatomically with the observer-centric rule where the
    checkpoint's labels are observer-centric (the reading used), and the others, for comparison, by PCK@0.2."""
    rule = preprocess_from_checkpoint(load_checkpoint(checkpoint), checkpoint).observer_centric
    readings = {"anatomical" + (", observer-centric rule" if rule else ""): ("anatomical", rule)}
    readings |= {"anatomical, no rule": ("anatomical", False)} if rule else {}
    readings["mirrored"] = ("mirrored", False)
    scores = {}
    for name, (mapping, apply_rule) in readings.items():
        people = {}
        for frame, file in zip(frames, files):
            joints = mediapipe_joints(landmarks[file], MAPPINGS[mapping], apply_rule)
            people[frame.file] = (mediapipe_box(joints), joints)
        scores[name] = score(frames, people)
    used = next(iter(readings))
    return {"mapping": used, **scores[used], "readings_pck@0.2": {k: v.get("pck@0.2") for k, v in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=FLIC, help="the FLIC folder (examples.mat + images/)")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="tune on val; test for the report")
    parser.add_argument("--checkpoint", type=Path, default=None, help="pose checkpoint (default: bundled)")
    parser.add_argument("-n", type=int, default=40, help="FLIC frames (seed 0)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command on n and on 4 frames")
    parser.add_argument("--threads", type=int, default=0, help="cores for each tool's process (0: all)")
    parser.add_argument("--search", choices=("scan", "detector"), default="detector", help="predict's --search")
    parser.add_argument("--predict-args", default="", help="more `cnnmrf predict` options, one shell-quoted string")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="python of MediaPipe's environment")
    parser.add_argument("--complexity", type=int, default=1, help="MediaPipe Pose model_complexity")
    args = parser.parse_args()
    if args.n <= FEW:
        parser.error(f"-n must exceed {FEW}")
    checkpoint = args.checkpoint or default_checkpoint()
    frames = flic_frames(FlicSource(args.flic), args.split, checkpoint, args.n)
    n, images = len(frames), args.flic / "images"
    files = [str(images / f.file) for f in frames]
    result: dict = {
        "benchmark": "peers",
        "split": args.split,
        "frames": n,
        "annotated_people": int(sum(len(f.boxes) for f in frames)),
        "threads": args.threads or len(os.sched_getaffinity(0)),
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    cnnmrf = Path(sys.executable).with_name("cnnmrf")
    command = [str(cnnmrf if cnnmrf.is_file() else shutil.which("cnnmrf")), "predict"]
    options = ["--json", "--search", args.search, "--checkpoint", str(checkpoint), *shlex.split(args.predict_args)]
    peer_here = args.peer_python.is_file()
    if not peer_here:
        result["mediapipe"] = f"skipped: no {args.peer_python} (see this script's usage)"
        print(result["mediapipe"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        peer = Path(tmp) / "mediapipe_peer.py"
        peer.write_text(PEER)
        times: dict[str, dict[int, list[float]]] = {k: {n: [], FEW: []} for k in ("cnnmrf", "mediapipe", "inside")}
        stdout, report = "", {}
        for repeat in range(args.repeats):  # the two tools in turn, so that a change in the machine's load hits both
            for count in (n, FEW):
                out_dir = f"{tmp}/out-{repeat}-{count}"
                seconds, out = run([*command, *files[:count], "--out", out_dir, *options], args.threads)
                times["cnnmrf"][count].append(seconds)
                stdout = stdout or out
            for count in (n, FEW) if peer_here else ():
                seconds, out = run(
                    [str(args.peer_python), str(peer), str(args.complexity), *files[:count]], args.threads
                )
                document = json.loads(out.strip().splitlines()[-1])
                times["mediapipe"][count].append(seconds)
                times["inside"][count].append(document["seconds"])
                report = report or document
    result["cnnmrf"] = {"command": shlex.join(["cnnmrf", "predict", "FILES", *options]), **marginal(times["cnnmrf"], n)}
    result["cnnmrf"].update(score(frames, cnnmrf_people(stdout, images)))
    print("cnnmrf", json.dumps(result["cnnmrf"]), flush=True)
    if peer_here:
        result["mediapipe"] = {
            "version": report["mediapipe"],
            "model_complexity": args.complexity,
            **marginal(times["mediapipe"], n),
            "in_process_marginal_images_per_s": marginal(times["inside"], n)["marginal_images_per_s"],
            "frames_with_a_person": sum(v is not None for v in report["landmarks"].values()),
            **score_mediapipe(frames, files, report["landmarks"], checkpoint),
        }
        rates = result["cnnmrf"]["marginal_images_per_s"], result["mediapipe"]["marginal_images_per_s"]
        result["cnnmrf_over_mediapipe_rate"] = round(rates[0] / rates[1], 3)
        print("mediapipe", json.dumps(result["mediapipe"]), flush=True)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
