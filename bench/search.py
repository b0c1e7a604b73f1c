"""Accuracy of `predict`'s person search on whole FLIC test frames: found torso box vs. the annotated one, and PCK."""

# Usage (from the repository root): python bench/search.py [--data data/flic.h5] [--flic ../shared/flic/FLIC] [-n 40]

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.format import read_split
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.inference.photos import PosePredictor


def box_matches(found: np.ndarray, truth: np.ndarray) -> bool:
    """Centre within half a torso height of the annotated box's, height within 0.7-1.43x of its height."""
    height = truth[3] - truth[1]
    gap_x = (found[0] + found[2] - truth[0] - truth[2]) / 2
    gap_y = (found[1] + found[3] - truth[1] - truth[3]) / 2
    centre_gap = np.hypot(gap_x, gap_y)
    return bool(centre_gap < 0.5 * height and 0.7 < (found[3] - found[1]) / height < 1.43)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("-n", type=int, default=40, help="random test frames (seed 0)")
    args = parser.parse_args()
    if not args.data.is_file() or not (args.flic / "images").is_dir():
        print(json.dumps({"benchmark": "search", "skipped": True, "reason": "needs data/flic.h5 and the FLIC images"}))
        return
    predictor = PosePredictor.from_checkpoint(args.checkpoint or default_checkpoint(), "cpu")
    test = read_split(args.data, "test", ("file", "torsobox", "joints"))
    files, boxes, truth = test["file"], test["torsobox"], test["joints"]
    rows = np.random.default_rng(0).choice(len(files), min(args.n, len(files)), replace=False)
    images = [Image.open(args.flic / "images" / files[r]).convert("RGB") for r in rows]
    result = {"benchmark": "search", "frames": len(rows)}
    for steps in (0, predictor.search.refine_steps):
        predictor.search = replace(predictor.search, refine_steps=steps)
        preds = [predictor.predict_image(image, 1.0) for image in images]
        found = np.mean([box_matches(p.box, boxes[r]) for p, r in zip(preds, rows)])
        pck = np.mean(normalized_distances(np.stack([p.joints for p in preds]), truth[rows]) <= 0.2)
        result[f"refine_{steps}"] = {"box_found": round(float(found), 3), "pck@0.2_mean": round(float(pck), 3)}
        print(f"refine steps {steps}: box found in {found:.1%} of frames, mean PCK@0.2 {pck:.1%}")
    given = predictor.predict_images([(im, 1.0) for im in images], [boxes[r] for r in rows])
    result["given_box_pck@0.2_mean"] = round(
        float(np.mean(normalized_distances(np.stack([p.joints for p in given]), truth[rows]) <= 0.2)), 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
