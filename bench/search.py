"""Accuracy of `predict`'s person search on whole FLIC test frames (no boxes given), and of its calibrated scores."""

# Usage (from the repository root): python bench/search.py --data data/flic.h5 [--flic ../shared/flic/FLIC] [-n 200]
# Measures, at the checkpoint's default --min-score: annotated people found (a reported torso box within half a torso
# height of theirs, 0.7-1.43x as tall), PCK@0.2 of the found people against PCK@0.2 with the annotated boxes given,
# false people in a person-free strip of each frame and in synthetic clutter, and the expected calibration error of
# the person and joint scores. Everything here is the test split; calibration was fitted on validation frames.

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data as samples

from cnnmrf.bundled import default_checkpoint
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import read_split
from cnnmrf.evaluation.calibrate import SearchSample, fit_joint_calibration, reported, search_metrics, search_sample
from cnnmrf.evaluation.frames import matches_person, split_frames, synthetic_clutter
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.inference.calibration import expected_calibration_error
from cnnmrf.inference.photos import PosePredictor, load_image

HELD_OUT_PHOTOS = ("coffee", "chelsea", "brick", "rocket")  # person-free photos calibration never saw


def draw_flagged_regions(
    sample: SearchSample, scores: np.ndarray, threshold: float, flic: FlicSource, path: Path, most: int = 80
) -> None:
    """Tile the frames whose person-free region got a person reported (region yellow, annotated torso boxes green,
    the reported box red), likeliest first, to check by eye whether an unannotated person is there."""
    flagged = []
    for p, kind in enumerate(sample.kinds):
        mine = np.flatnonzero(sample.photo == p)
        if kind == "region" and len(mine) and scores[mine].max() >= threshold:
            flagged.append((float(scores[mine].max()), p, mine[np.argmax(scores[mine])]))
    tiles = []
    for score, p, best in sorted(flagged, reverse=True)[:most]:
        frame, strip = sample.truth[p - 1], sample.strips[p]  # a region follows its frame
        image = Image.open(io.BytesIO(flic.read_image_bytes(frame.file))).convert("RGB")
        draw = ImageDraw.Draw(image)
        draw.rectangle(list(strip), outline=(255, 255, 0), width=4)
        for box in frame.boxes:
            draw.rectangle(list(box), outline=(0, 255, 0), width=3)
        draw.rectangle(
            list(sample.boxes[best] + [strip[0], strip[1], strip[0], strip[1]]), outline=(255, 0, 0), width=4
        )
        draw.text((8, 8), f"#{len(tiles)} p={score:.2f}", fill=(255, 255, 255))
        tiles.append(image.resize((360, 240)))
    sheet = Image.new("RGB", (360 * 5, 240 * max(1, -(-len(tiles) // 5))))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 5) * 360, (i // 5) * 240))
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--flic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/flic/FLIC")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("-n", type=int, default=200, help="random test frames (seed 0); 0: all")
    parser.add_argument("--clutter", type=int, default=40, help="synthetic person-free images (seed 7)")
    parser.add_argument("--flagged-png", type=Path, default=None, help="draw the regions where a person is reported")
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
    clutter = synthetic_clutter(args.clutter, seed=7) + [  # calibrate draws with seeds 0 and 1
        Image.fromarray(getattr(samples, name)()).convert("RGB") for name in HELD_OUT_PHOTOS
    ]
    start = time.perf_counter()
    sample = search_sample(predictor, flic, frames, clutter, regions=True)
    seconds = time.perf_counter() - start
    scores = predictor.calibration.person.probability(sample.features)
    threshold = predictor.threshold
    metrics = search_metrics(sample, scores, threshold, predictor.search)
    if args.flagged_png is not None:
        draw_flagged_regions(sample, scores, threshold, flic, args.flagged_png)

    # PCK@0.2 of each annotated person: the likeliest reported person whose box matches theirs (all joints wrong if
    # none), against the model's prediction in their annotated box; at the default threshold and a few others.
    boxed = {}  # photo -> (P,) per annotated person: joints correct at 0.2 with the annotated box given
    for p, frame in enumerate(sample.truth):
        if frame is not None:
            image, factor = load_image(flic.read_image_bytes(frame.file))
            given = predictor.predict_images([(image, factor)] * len(frame.boxes), list(frame.boxes))
            joints = np.stack([g.people[0].joints for g in given])  # (P, K, 2)
            boxed[p] = normalized_distances(joints, frame.joints) <= 0.2  # (P, K)
    pck_given = float(np.mean(np.concatenate(list(boxed.values()))))

    def pck_with_search(at: float) -> float:
        correct = []
        for p, kept in enumerate(reported(sample, scores, at, predictor.search)):
            frame = sample.truth[p]
            if frame is None:
                continue
            hits = matches_person(sample.boxes[kept], frame.boxes)  # (M, P)
            for person in range(len(frame.boxes)):
                match = kept[hits[:, person]]
                found = (
                    sample.found_joints[match[0]][None]
                    if len(match)
                    else np.full((1, *frame.joints[person].shape), np.inf)
                )
                correct.append(normalized_distances(found, frame.joints[person][None])[0] <= 0.2)
        return float(np.mean(correct))

    pck_search = pck_with_search(threshold)
    curve = {}
    for at in sorted({0.3, 0.4, 0.45, 0.5, 0.6, 0.7, threshold}):
        m = search_metrics(sample, scores, at, predictor.search)
        curve[f"{at:.2f}"] = {
            "people_found": round(m["people_found"], 4),
            "pck_ratio": round(pck_with_search(at) / pck_given, 4),
            "false_people_rate_person_free_photos": round(m["false_people_rate"], 4),
            "regions_with_a_person_reported": round(m["region_people_rate"], 4),
        }

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
        "regions": metrics["regions"],
        "regions_with_a_person_reported": round(metrics["region_people_rate"], 4),
        "person_free_photos": metrics["clutter_photos"],
        "false_people_rate_person_free_photos": round(metrics["false_people_rate"], 4),
        "person_score_ece": round(metrics["person_score_ece"], 4),
        "joint_score_ece": {k: round(v, 4) for k, v in joint_ece.items()},
        "search_seconds_per_photo": round(seconds / max(len(sample.truth), 1), 3),
        "by_threshold": curve,
    }
    for key, value in result.items():
        print(f"{key:28s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
