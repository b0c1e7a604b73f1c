"""The person detector alone (no pose model, no scores): recall of annotated torso boxes on whole validation frames and
on bench/scales.py's shrunk and tiled layouts, at one or more input sizes."""

# Usage (from the repository root):
#   python bench/person_recall.py [--person-checkpoint P] [--sides 320,480] [-n 72] [--threads 1]
# Whole frames: recall@1/@3/@5 over the 395 frames holding the training split's held-out people (as train-person
# validates: cnnmrf.training.person.validate_person). Layouts: the share of annotated people whose torso box a box of
# the detector matches (cnnmrf.evaluation.frames.matches_person), among its best boxes (DetectorSearchConfig.max_boxes,
# 3), and among those plus every other box of probability >= 0.3 (up to 12: what the first pass proposes in predict);
# validation frames only.

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scales import FLIC, build_layouts, flic_frames  # bench/scales.py, beside this script

from cnnmrf.bundled import default_checkpoint, default_person_checkpoint
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.person_frames import train_val_frames
from cnnmrf.evaluation.frames import matches_person, read_frame
from cnnmrf.inference.person_boxes import detect_people
from cnnmrf.inference.proposals import DetectorSearchConfig
from cnnmrf.models.person import load_person_checkpoint, person_detector_from
from cnnmrf.training.person import validate_person


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=FLIC, help="the FLIC folder or zip")
    parser.add_argument("--person-checkpoint", type=Path, default=None, help="default: the bundled person detector")
    parser.add_argument("--sides", default="320", help="the detector's input long sides, comma-separated")
    parser.add_argument("-n", type=int, default=72, help="validation frames for the layouts (seed 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = args.person_checkpoint or default_person_checkpoint()
    model = person_detector_from(load_person_checkpoint(path), str(path))
    flic = FlicSource(args.flic)
    _, val = train_val_frames(flic, 0.1, 0)  # train-person's defaults, as the bundled run
    frames = flic_frames(flic, "val", default_checkpoint(), args.n)
    layouts = build_layouts([read_frame(flic, f.file)[0] for f in frames], frames, [0.125, 0.25, 0.5, 1.0], [2, 3], 0)
    search = DetectorSearchConfig()
    result: dict = {"benchmark": "person_recall", "person_checkpoint": str(path), "sides": {}}
    for side in [int(v) for v in args.sides.split(",")]:
        recall, people = validate_person(model, flic, val, side, torch.float32, torch.device("cpu"))
        row: dict = {"whole_frames": {k: round(v, 1) for k, v in recall.items()}, "whole_frame_people": people}
        start, count = time.perf_counter(), 0
        for name, canvases in layouts.items():
            best, proposed = [], []
            for layout in canvases:
                boxes = detect_people(model, layout.image, search.max_crowd, side)  # (k, 5), best first
                rank = np.arange(len(boxes))
                likely = (rank < search.max_boxes) | (boxes[:, 4] >= search.crowd_score)
                best.append(matches_person(boxes[: search.max_boxes, :4], layout.boxes).any(axis=0))
                proposed.append(matches_person(boxes[likely, :4], layout.boxes).any(axis=0))
                count += 1
            row[name] = {
                f"best_{search.max_boxes}": round(100 * float(np.concatenate(best).mean()), 1),
                "proposed": round(100 * float(np.concatenate(proposed).mean()), 1),
            }
        row["ms_per_canvas"] = round(1000 * (time.perf_counter() - start) / max(count, 1), 1)
        result["sides"][str(side)] = row
        print(side, json.dumps(row), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
