"""Accuracy of `predict`'s person search on whole FLIC test frames (no boxes given), and of its calibrated scores."""

# Usage (from the repository root): python bench/search.py --data data/flic.h5 [--flic ../shared/flic/FLIC] [-n 200]
# Measures, at the checkpoint's default --min-score: annotated people found (a reported torso box within half a torso
# height of theirs, 0.7-1.43x as tall), PCK@0.2 of the found people against PCK@0.2 with the annotated boxes given,
# false people in a person-free strip of each frame and in synthetic clutter, and the expected calibration error of
# the person and joint scores. Everything here is the test split; calibration was fitted on validation frames.

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import read_split
from cnnmrf.evaluation.calibrate import (
    fit_joint_calibration,
    matches_person,
    search_metrics,
    search_sample,
    split_frames,
    synthetic_clutter,
)
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.inference.calibration import expected_calibration_error
from cnnmrf.inference.photos import PosePredictor, load_image
from cnnmrf.inference.search import non_maximum_suppression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("-n", type=int, default=200, help="random test frames (seed 0); 0: all")
    parser.add_argument("--clutter", type=int, default=40, help="synthetic person-free images (seed 1)")
    args = parser.parse_args()
    if not args.data.is_file() or not (args.flic / "images").is_dir():
        print(json.dumps({"benchmark": "search", "skipped": True, "reason": "needs --data and the FLIC images"}))
        return
    checkpoint = args.checkpoint or default_checkpoint()
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu")
    if predictor.calibration is None:
        raise SystemExit(f"{checkpoint} is not calibrated: run `cnnmrf calibrate` first")
    flic = FlicSource(args.flic)
    total = len(read_split(args.data, "test", ("file",))["file"])
    rows = np.arange(total)
    if args.n:
        rows = np.sort(np.random.default_rng(0).choice(total, min(args.n, total), replace=False))
    frames = split_frames(args.data, "test", rows)
    start = time.perf_counter()
    sample = search_sample(predictor, flic, frames, synthetic_clutter(args.clutter, seed=1))
    seconds = time.perf_counter() - start
    scores = predictor.calibration.person.probability(sample.features)
    threshold, overlap = predictor.threshold, predictor.search.person_overlap
    metrics = search_metrics(sample, scores, threshold, overlap)
    # a person-free photo gets a false person when any candidate scores above the threshold (NMS keeps the best)
    free = [bool((scores[sample.photo == p] >= threshold).any()) for p, t in enumerate(sample.truth) if t is None]
    regions, clutter = free[: len(free) - args.clutter], free[len(free) - args.clutter :]  # clutter comes last

    # PCK@0.2 of each annotated person: the likeliest reported person whose box matches theirs (all joints wrong if
    # none), against the model's prediction in their annotated box.
    searched, given = [], []
    for p, frame in enumerate(sample.truth):
        if frame is None:
            continue
        mine = np.flatnonzero(sample.photo == p)
        kept = mine[non_maximum_suppression(sample.boxes[mine], scores[mine], overlap)] if len(mine) else mine
        kept = kept[scores[kept] >= threshold]
        hits = matches_person(sample.boxes[kept], frame.boxes)  # (M, P)
        image, factor = load_image(flic.read_image_bytes(frame.file))
        boxed = predictor.predict_images([(image, factor)] * len(frame.boxes), list(frame.boxes))
        for person in range(len(frame.boxes)):
            truth = frame.joints[person][None]  # (1, K, 2)
            given.append(normalized_distances(boxed[person].people[0].joints[None], truth)[0] <= 0.2)
            match = kept[hits[:, person]]
            found = sample.found_joints[match[0]][None] if len(match) else np.full_like(truth, np.inf)
            searched.append(normalized_distances(found, truth)[0] <= 0.2)
    pck_search, pck_given = float(np.mean(searched)), float(np.mean(given))

    _, joint_samples = fit_joint_calibration(predictor, args.data, "test", rows)  # test crops, given boxes
    joint_ece = {
        name: expected_calibration_error(predictor.calibration.joints[name].probability(s), c)
        for name, (s, c) in joint_samples.items()
    }
    result = {
        "benchmark": "search",
        "checkpoint": str(checkpoint),
        "test_frames": len(frames),
        "annotated_people": metrics["annotated_people"],
        "min_score": threshold,
        "people_found": round(metrics["people_found"], 4),
        "pck@0.2_search": round(pck_search, 4),
        "pck@0.2_given_boxes": round(pck_given, 4),
        "pck_ratio": round(pck_search / max(pck_given, 1e-9), 4),
        "person_free_regions": len(regions),
        "false_people_rate_regions": round(float(np.mean(regions)) if regions else 0.0, 4),
        "false_people_rate_clutter": round(float(np.mean(clutter)) if clutter else 0.0, 4),
        "person_score_ece": round(metrics["person_score_ece"], 4),
        "joint_score_ece": {k: round(v, 4) for k, v in joint_ece.items()},
        "search_seconds_per_photo": round(seconds / max(len(sample.truth), 1), 3),
    }
    for key, value in result.items():
        print(f"{key:28s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
