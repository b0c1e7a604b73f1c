"""Benchmark `predict`: single-image latency (file to joints) with/without the MRF or search, and crop throughput."""

# Usage (from the repository root): python bench/predict.py [--checkpoint CKPT --repeats 20 --batch 32 --device cpu]

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timing import median_seconds  # bench/timing.py, beside this script

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.geometry import crop_transform
from cnnmrf.data.images import render
from cnnmrf.devices import resolve_precision
from cnnmrf.inference.crops import predict_crops
from cnnmrf.inference.photos import PosePredictor


def main() -> None:
    """Time the pipeline on skimage's astronaut (512x512 PNG) and print a final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled weights")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per single-image measurement")
    parser.add_argument("--batch", type=int, default=32, help="crops per batch for the throughput measurement")
    parser.add_argument("--batch-repeats", type=int, default=5, help="timed batches for the throughput")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from skimage import data

    checkpoint = args.checkpoint or default_checkpoint()
    predictor = PosePredictor.from_checkpoint(checkpoint, args.device)
    device = predictor.device
    prep = predictor.preprocess
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(path)
        print(
            f"predict on {path.name} (512x512 PNG): checkpoint {checkpoint}, {prep.input_size}px crops, "
            f"spatial model {'yes' if predictor.model.spatial is not None else 'no'}, device {device}, "
            f"threads {torch.get_num_threads()}, median of {args.repeats}"
        )
        found, image = predictor.predict_file(path)
        box = found.box
        timings = {}
        predictor.use_spatial = True
        timings["search_full"] = median_seconds(lambda: predictor.predict_file(path), 1, args.repeats, device)
        timings["box_full"] = median_seconds(lambda: predictor.predict_file(path, box), 1, args.repeats, device)
        timings["search_only"] = median_seconds(lambda: predictor.find_person(image), 1, args.repeats, device)
        predictor.use_spatial = False
        timings["search_detector"] = median_seconds(lambda: predictor.predict_file(path), 1, args.repeats, device)
        timings["box_detector"] = median_seconds(lambda: predictor.predict_file(path, box), 1, args.repeats, device)
        predictor.use_spatial = True
    labels = {
        "search_full": "file -> joints, person search + detector + MRF",
        "search_detector": "file -> joints, person search + detector alone",
        "box_full": "file -> joints, --box (no search) + detector + MRF",
        "box_detector": "file -> joints, --box (no search) + detector alone",
        "search_only": "person search alone (decoded image)",
    }
    for key, label in labels.items():
        print(f"{label:52s} {timings[key] * 1e3:8.1f} ms  ({1 / timings[key]:6.1f} images/s)")

    # Batched throughput over crops (model + peak decoding + mapping back), boxes jittered around the found one.
    rng = np.random.default_rng(0)
    height = box[3] - box[1]
    boxes = box[None] + rng.uniform(-0.1, 0.1, size=(args.batch, 4)) * height  # (B, 4)
    transforms = np.stack([crop_transform(b, prep.input_size, prep.crop_scale) for b in boxes])  # (B, 2, 3)
    crops = np.stack([render(image, t, prep.input_size) for t in transforms])  # (B, S, S, 3)
    model = predictor.model
    batch_s = {}
    for precision in ("fp32", "bf16"):  # bf16 is emulated (several times slower) on CPUs without AMX/AVX512-BF16
        dtype = resolve_precision(precision, device).dtype
        for name, spatial in (("full", True), ("detector", False)):
            batch_s[f"{name}_{precision}"] = median_seconds(
                lambda s=spatial, d=dtype: predict_crops(model, crops, transforms, device, use_spatial=s, dtype=d),
                1,
                args.batch_repeats,
                device,
            )
    for name, seconds in batch_s.items():
        print(
            f"crops, batch {args.batch}, {name:13s}: {args.batch / seconds:8.1f} images/s "
            f"({seconds * 1e3:.0f} ms/batch)"
        )
    print(f"auto precision here: {resolve_precision('auto', device).name} ({resolve_precision('auto', device).reason})")
    print(f"whole pipeline with search + MRF: {1 / timings['search_full']:.1f} images/s (target >= 10 on 2 CPU cores)")
    print(
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "input_size": prep.input_size,
                "repeats": args.repeats,
                "latency_ms": {k: round(v * 1e3, 2) for k, v in timings.items()},
                "images_per_s": {k: round(1 / v, 2) for k, v in timings.items()},
                "batch": args.batch,
                "batch_images_per_s": {k: round(args.batch / v, 2) for k, v in batch_s.items()},
                "found_box": [round(float(v), 1) for v in box],
            }
        )
    )


if __name__ == "__main__":
    main()
