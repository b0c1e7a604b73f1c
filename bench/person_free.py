"""Does `predict` find nobody where there is nobody? 20 person-free photos that calibration never saw: 8 of
scikit-image's and 12 synthetic clutter photos of a seed of their own."""

# Usage (from the repository root):
#   python bench/person_free.py [--checkpoint CKPT] [--search detector|scan] [--min-score S] [--threads 1]
# scikit-image's photos are those kept out of calibration (cnnmrf.evaluation.frames.NATURAL_NEGATIVES lists the ones
# it crops its negatives from): coffee, chelsea (a cat), brick, rocket, retina, cell, checkerboard and the left view of
# stereo_motorcycle. The clutter is synthetic_clutter(12, seed 4242): calibrate draws with the training seed and the
# next, train-person with 100000 + seed, the tests with 12345. Reports, per photo, the people reported at the
# checkpoint's default --min-score (or --min-score) and their scores; the bar: at least 19 of 20 get nobody.

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.options import SearchMethod, person_detector_for
from cnnmrf.evaluation.frames import synthetic_clutter
from cnnmrf.inference.photos import PosePredictor

HELD_OUT = ("coffee", "chelsea", "brick", "rocket", "retina", "cell", "checkerboard", "stereo_motorcycle")


def photos() -> dict[str, Image.Image]:
    """The 20 person-free photos by name."""
    found = {}
    for name in HELD_OUT:
        array = getattr(data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle: (left, right, disparity)
        found[name] = Image.fromarray(np.asarray(array)).convert("RGB")
    for i, image in enumerate(synthetic_clutter(12, seed=4242)):
        found[f"clutter{i}"] = image
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("--search", choices=[m.value for m in SearchMethod], default="detector")
    parser.add_argument("--min-score", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    person = person_detector_for(SearchMethod(args.search), None)
    checkpoint = args.checkpoint or default_checkpoint()
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu", person=person, min_score=args.min_score)
    start = time.perf_counter()
    reported = {name: predictor.predict_image(image).people for name, image in photos().items()}
    result = {
        "benchmark": "person_free",
        "search": predictor.search_name,
        "min_score": predictor.threshold,
        "photos": len(reported),
        "photos_with_nobody": sum(not people for people in reported.values()),
        "seconds": round(time.perf_counter() - start, 1),
        "people": {name: [round(float(p.score), 3) for p in people] for name, people in reported.items() if people},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
