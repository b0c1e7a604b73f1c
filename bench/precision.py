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
from cnnmrf.evaluation.frames import Frame, matches_person, read_frame, split_frames
from cnnmrf.evaluation.holdout import resolve_holdout
from cnnmrf.inference.outputs import ImagePrediction
from cnnmrf.inference.photos import PosePredictor
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


def compare(a: ImagePrediction, b: ImagePrediction, at: float) -> dict[str, float]:
    """Match the people of two predictions of one photo scored at least ``at`` by box IoU (> 0.3, greedy, likeliest
    first): people found by one only, the largest score difference and joint move (share of the height) of the rest."""
    height = a.image_size[1]
    mine, theirs = [p for p in a.people if p.score >= at], [p for p in b.people if p.score >= at]
    only, score, joints = 0, 0.0, 0.0
    for person in mine:
        ious = [box_iou(person.box, other.box)[0, 0] for other in theirs]
        if not ious or max(ious) <= 0.3:
            only += 1
            continue
        other = theirs.pop(int(np.argmax(ious)))
        score = max(score, abs(person.score - other.score))
        joints = max(joints, float(np.abs(person.joints - other.joints).max()) / height)
    return {"only_one": only + len(theirs), "score_diff": score, "joint_move": joints}


def validation_frames(data: Path, checkpoint: Path, n: int) -> list[Frame]:
    """``n`` frames (drawn with seed 0) holding the validation rows of the checkpoint's training run."""
    holdout, _ = resolve_holdout(load_checkpoint(checkpoint).get("train_config"), None, None, False, checkpoint)
    total = len(read_split(data, "train", ("file",))["file"])
    rows = holdout_rows(total, holdout.val_fraction, holdout.seed)[1]
    rows = np.sort(np.random.default_rng(0).choice(rows, min(n, len(rows)), replace=False))
    return split_frames(data, "train", rows)


def people_found(predictions: dict[str, ImagePrediction], frames: list[Frame], at: float) -> float | None:
    """Share of the frames' annotated people whose torso box a reported person (scored at least ``at``) matches."""
    if not frames:
        return None
    hits = []
    for frame in frames:
        boxes = np.array([p.box for p in predictions[frame.file].people if p.score >= at]).reshape(-1, 4)
        hits.append(matches_person(boxes, frame.boxes).any(axis=0))  # (P,)
    return float(np.mean(np.concatenate(hits)))


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
        frames = validation_frames(args.data, checkpoint, args.n)
        flic = FlicSource(args.flic)
        photos.update({frame.file: read_frame(flic, frame.file) for frame in frames})
    found: dict[str, dict[str, ImagePrediction]] = {}
    seconds = {}
    for precision, predictor in predictors.items():
        start = time.perf_counter()
        found[precision] = {
            name: predictor.predict_image(*(photo if isinstance(photo, tuple) else (photo, 1.0)))
            for name, photo in photos.items()
        }
        seconds[precision] = (time.perf_counter() - start) / len(photos)
    threshold = PosePredictor.from_checkpoint(checkpoint, "cpu").threshold
    frame_names = [f.file for f in frames]
    result = {
        "benchmark": "precision",
        "cpu_bf16": resolve_precision("auto", torch.device("cpu")).reason,
        "validation_frames": len(frames),
        "seconds_per_photo": {k: round(v, 3) for k, v in seconds.items()},
    }
    for at in (args.min_score, threshold):
        rows_out = {name: compare(found["fp32"][name], found["bf16"][name], at) for name in photos}
        worst = {key: max(rows_out[n][key] for n in frame_names) if frames else None for key in rows_out["cat"]}
        result[f"at_min_score_{at:.2f}"] = {
            "photos": {name: {k: round(v, 4) for k, v in r.items()} for name, r in list(rows_out.items())[:5]},
            "frames_with_a_person_found_by_one_precision_only": sum(rows_out[n]["only_one"] > 0 for n in frame_names),
            "frames_worst_score_diff": worst["score_diff"] and round(worst["score_diff"], 4),
            "frames_worst_joint_move_of_height": worst["joint_move"] and round(worst["joint_move"], 4),
            "annotated_people_found": {p: people_found(found[p], frames, at) for p in predictors},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
