"""Where do `predict`'s people come from? The scan (+ faces) against the learned person detector (with and without
faces) as the proposal source, on FLIC validation frames and five ordinary photos."""

# Usage (from the repository root):
#   python bench/proposals.py [--data data/flic.h5] [--flic ../shared/flic/FLIC] [-n 100] [--threads 2]
# Runs `predict`'s search (no boxes; each image read and decoded as `cnnmrf predict` does) with --search scan, with
# --search detector, and with the detector's boxes alone (no face proposals), on n validation frames of FLIC (the
# held-out rows of the checkpoint's training run, seed 0 as bench/precision.py; never the test split) and on the five
# photos of bench/precision.py (astronaut, camera(man), cat, coffee cup, Grace Hopper). Reports, at the checkpoint's
# default --min-score: the share of the frames' annotated people found (a reported torso box within half a torso height
# of theirs, 0.7-1.43x as tall), reported people matching no annotated one (FLIC leaves many people unannotated, so
# an upper bound on false people), seconds per photo, and per photo the people found (score, source).

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from precision import ordinary_photos, validation_frames  # bench/precision.py, beside this script

from cnnmrf.bundled import default_checkpoint, default_person_checkpoint
from cnnmrf.evaluation.frames import matches_person
from cnnmrf.inference.outputs import ImagePrediction
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.proposals import DetectorSearchConfig
from cnnmrf.models.person import load_person_checkpoint, person_detector_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("--person-checkpoint", type=Path, default=None, help="default: the bundled person detector")
    parser.add_argument("-n", type=int, default=100, help="validation frames (seed 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint()
    person_path = args.person_checkpoint or default_person_checkpoint()
    person = person_detector_from(load_person_checkpoint(person_path), str(person_path))
    scan = PosePredictor.from_checkpoint(checkpoint, "cpu")
    detector = PosePredictor.from_checkpoint(checkpoint, "cpu", person=person)
    alone = replace(detector, person_config=DetectorSearchConfig(faces=False))
    predictors = {"scan": scan, "detector": detector, "detector_no_faces": alone}

    frames = validation_frames(args.data, checkpoint, args.n)
    with tempfile.TemporaryDirectory() as folder:
        photos = {}
        for name, image in ordinary_photos().items():
            photos[name] = Path(folder) / f"{name}.png"
            image.save(photos[name])
        result: dict = {"benchmark": "proposals", "validation_frames": len(frames), "threshold": scan.threshold}
        for name, predictor in predictors.items():
            predictor.predict_file(photos["astronaut"])  # warm-up
            start = time.perf_counter()
            found = {f.file: predictor.predict_file(args.flic / "images" / f.file)[0] for f in frames}
            seconds = (time.perf_counter() - start) / max(len(frames), 1)
            on_photos = {key: predictor.predict_file(path)[0] for key, path in photos.items()}
            hits, unmatched = [], 0
            for frame in frames:
                boxes = np.array([p.box for p in found[frame.file].people]).reshape(-1, 4)
                match = matches_person(boxes, frame.boxes)  # (N, P)
                hits.append(match.any(axis=0))
                unmatched += int((~match.any(axis=1)).sum())
            people = np.concatenate(hits) if hits else np.zeros(0, bool)
            result[name] = {
                "annotated_people": int(people.size),
                "annotated_people_found": round(float(people.mean()), 4) if people.size else None,
                "reported_people_unannotated": unmatched,
                "seconds_per_photo": round(seconds, 3),
                "sources": count_sources(found.values()),
                "photos": {key: describe(p) for key, p in on_photos.items()},
            }
            print(name, json.dumps({k: v for k, v in result[name].items() if k != "photos"}), flush=True)
    print(json.dumps(result))


def count_sources(predictions: object) -> dict[str, int]:
    """How many reported people came from each proposal source."""
    counts: dict[str, int] = {}
    for prediction in predictions:  # type: ignore[attr-defined]
        for person in prediction.people:
            counts[person.source] = counts.get(person.source, 0) + 1
    return counts


def describe(prediction: ImagePrediction) -> list[str]:
    """The people reported in a photo: score, source and torso box."""
    return [
        f"{p.score:.2f} {p.source} {','.join(f'{v:.0f}' for v in p.box)}"
        for p in prediction.people
        if p.score is not None
    ]


if __name__ == "__main__":
    main()
