"""Does `predict` answer the same in float32 and bfloat16? People, person scores and joints on photos and frames."""

# Usage (from the repository root):
#   python bench/precision.py [--data data/flic.h5] [--flic ../shared/flic/FLIC] [-n 100] [--min-score 0.05]
# Runs the person search (no boxes) with --precision fp32 and bf16 on five ordinary photos (scikit-image's astronaut,
# cameraman, cat and coffee cup, matplotlib's Grace Hopper) and on n validation frames of FLIC (the held-out rows of
# the checkpoint's training run), matches the people of the two runs by torso-box overlap (IoU > 0.3) and reports
# people found by one precision only, the largest person-score difference and the largest joint move (as a share of
# the image height), and each precision's seconds per photo. On the frames it also counts the annotated people found
# at the checkpoint's default --min-score. The bar: the same people, scores within 0.05, joints within 2%.

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch
from PIL import Image
from skimage import data as samples

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import read_split
from cnnmrf.devices import resolve_precision
from cnnmrf.evaluation.frames import matches_person, split_frames
from cnnmrf.inference.outputs import ImagePrediction
from cnnmrf.inference.photos import PosePredictor, load_image
from cnnmrf.inference.search import box_iou
from cnnmrf.models.checkpoint import load_checkpoint


def ordinary_photos() -> dict[str, Image.Image]:
    """The five photos of the comparison, RGB."""
    photos = {name: Image.fromarray(getattr(samples, name)()).convert("RGB") for name in ("astronaut", "camera")}
    photos["cat"] = Image.fromarray(samples.chelsea())
    photos["coffee"] = Image.fromarray(samples.coffee())
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photos["hopper"] = Image.open(file).convert("RGB")
    return photos


def compare(a: ImagePrediction, b: ImagePrediction) -> dict[str, float]:
    """Match the people of two predictions of one photo by box IoU (> 0.3, greedy, likeliest first)."""
    height = a.image_size[1]
    unmatched_b = list(range(len(b.people)))
    only, score, joints = 0, 0.0, 0.0
    for person in a.people:
        ious = [box_iou(person.box, b.people[j].box)[0, 0] for j in unmatched_b]
        if not ious or max(ious) <= 0.3:
            only += 1
            continue
        other = b.people[unmatched_b.pop(int(np.argmax(ious)))]
        score = max(score, abs(person.score - other.score))
        joints = max(joints, float(np.abs(person.joints - other.joints).max()) / height)
    return {"only_one": only + len(unmatched_b), "score_diff": score, "joint_move": joints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("-n", type=int, default=100, help="validation frames (seed 0)")
    parser.add_argument("--min-score", type=float, default=0.05, help="report people from this score (all: 0)")
    args = parser.parse_args()
    checkpoint = args.checkpoint or default_checkpoint()
    predictors = {
        p: PosePredictor.from_checkpoint(checkpoint, "cpu", p, min_score=args.min_score) for p in ("fp32", "bf16")
    }
    photos = ordinary_photos()
    frames = []
    if args.data.is_file() and (args.flic / "images").is_dir() and args.n:
        train = load_checkpoint(checkpoint).get("train_config") or {}
        total = len(read_split(args.data, "train", ("file",))["file"])
        rows = holdout_rows(total, train.get("val_fraction", 0.1), train.get("seed", 0))[1]
        rows = np.sort(np.random.default_rng(0).choice(rows, min(args.n, len(rows)), replace=False))
        frames = split_frames(args.data, "train", rows)
        flic = FlicSource(args.flic)
        photos.update({frame.file: load_image(flic.read_image_bytes(frame.file)) for frame in frames})
    found: dict[str, dict[str, ImagePrediction]] = {}
    seconds = {}
    for precision, predictor in predictors.items():
        start = time.perf_counter()
        found[precision] = {
            name: predictor.predict_image(*(photo if isinstance(photo, tuple) else (photo, 1.0)))
            for name, photo in photos.items()
        }
        seconds[precision] = (time.perf_counter() - start) / len(photos)
    rows_out = {name: compare(found["fp32"][name], found["bf16"][name]) for name in photos}
    threshold = PosePredictor.from_checkpoint(checkpoint, "cpu").threshold
    people_found = {}
    for precision in predictors:
        hits = [
            matches_person(
                np.array([p.box for p in found[precision][f.file].people if p.score >= threshold]).reshape(-1, 4),
                f.boxes,
            ).any(axis=0)
            for f in frames
        ]
        people_found[precision] = float(np.mean(np.concatenate(hits))) if hits else None
    worst = {key: max(r[key] for r in rows_out.values()) for key in ("only_one", "score_diff", "joint_move")}
    result = {
        "benchmark": "precision",
        "cpu_bf16": resolve_precision("auto", torch.device("cpu")).reason,
        "min_score": args.min_score,
        "photos": {name: {k: round(v, 4) for k, v in r.items()} for name, r in list(rows_out.items())[:5]},
        "validation_frames": len(frames),
        "frames_with_a_person_found_by_one_precision_only": sum(r["only_one"] > 0 for r in list(rows_out.values())[5:]),
        "worst_score_diff": round(worst["score_diff"], 4),
        "worst_joint_move_of_height": round(worst["joint_move"], 4),
        "people_found_at_default_min_score": people_found,
        "seconds_per_photo": {k: round(v, 3) for k, v in seconds.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
