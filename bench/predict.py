"""Benchmark `cnnmrf predict`: marginal throughput of the whole command on 512x512 photos, and where the time goes."""

# Usage (from the repository root): python bench/predict.py [--flic ../shared/flic/FLIC] [--repeats 3]
# Throughput is measured as the issue defines it: the console script run on a folder of 41 photos and on 1 photo
# (decode, search, model, drawing, writing; start-up excluded by the difference), 40 / (t41 - t1), medians of
# --repeats runs each. The photos are 41 random FLIC frames (centre square, resized to 512x512), or, without
# FLIC, the astronaut mirrored and shifted.

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from timing import median_seconds  # bench/timing.py, beside this script

from cnnmrf.bundled import default_checkpoint
from cnnmrf.inference.faces import detect_faces
from cnnmrf.inference.outputs import save_prediction
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.search import scan_proposals


def photos(flic: Path, count: int) -> list[Image.Image]:
    """``count`` 512x512 photos of people: FLIC test frames if there, else variations of the astronaut."""
    files = sorted((flic / "images").glob("*.jpg")) if (flic / "images").is_dir() else []
    if files:
        picked = np.random.default_rng(0).choice(len(files), count, replace=False)
        return [ImageOps.fit(Image.open(files[i]).convert("RGB"), (512, 512)) for i in picked]
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    return [(ImageOps.mirror(astronaut) if i % 2 else astronaut).rotate(i % 7 - 3) for i in range(count)]


def run_cli(folder: Path, out: Path, checkpoint: Path) -> float:
    """Seconds for one `cnnmrf predict FOLDER` run in a fresh process."""
    command = [sys.executable, "-m", "cnnmrf.cli.app", "predict", str(folder), "-c", str(checkpoint), "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled weights")
    parser.add_argument("--repeats", type=int, default=3, help="command runs per folder")
    args = parser.parse_args()
    checkpoint = args.checkpoint or default_checkpoint()
    images = photos(args.flic, 41)
    with tempfile.TemporaryDirectory() as tmp:
        many, one = Path(tmp) / "many", Path(tmp) / "one"
        many.mkdir()
        one.mkdir()
        for i, image in enumerate(images):
            image.save(many / f"{i:02d}.jpg", quality=92)
        shutil.copy(many / "00.jpg", one / "00.jpg")
        t41 = float(np.median([run_cli(many, Path(tmp) / "out", checkpoint) for _ in range(args.repeats)]))
        t1 = float(np.median([run_cli(one, Path(tmp) / "out1", checkpoint) for _ in range(args.repeats)]))
        people = [len(json.loads(p.read_text())["people"]) for p in sorted((Path(tmp) / "out").glob("*.json"))]

        # Where one photo's time goes (in-process, medians).
        predictor = PosePredictor.from_checkpoint(checkpoint, "cpu")
        image = images[0]
        found = predictor.predict_image(image)
        stages = {
            "scan": lambda: scan_proposals(predictor.model.detector, image, predictor.torso_px, 1.0, predictor.search),
            "faces": lambda: detect_faces(image),
            "proposals_verified": lambda: predictor.candidates([(image, 1.0)], [None]),
            "one_box": lambda: predictor.predict_images([(image, 1.0)], [np.array([200.0, 200, 300, 350])]),
            "draw_and_write": lambda: save_prediction(found, image, Path(tmp) / "x.json", Path(tmp) / "x.png"),
        }
        timings = {name: median_seconds(fn, 1, args.repeats * 2, predictor.device) for name, fn in stages.items()}
    marginal = 40 / max(t41 - t1, 1e-9)
    print(f"cnnmrf predict, {checkpoint.name}, torch threads {torch.get_num_threads()}")
    print(f"41 photos: {t41:.1f} s, 1 photo: {t1:.1f} s -> marginal throughput {marginal:.2f} images/s")
    print(f"people per photo: mean {np.mean(people):.2f}, none in {people.count(0)} of {len(people)}")
    for name, seconds in timings.items():
        print(f"  {name:20s} {seconds * 1e3:7.1f} ms")
    print(
        json.dumps(
            {
                "benchmark": "predict",
                "checkpoint": str(checkpoint),
                "threads": torch.get_num_threads(),
                "seconds_41_photos": round(t41, 2),
                "seconds_1_photo": round(t1, 2),
                "marginal_images_per_s": round(marginal, 2),
                "mean_people_per_photo": round(float(np.mean(people)), 3),
                "stage_ms": {k: round(v * 1e3, 1) for k, v in timings.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
