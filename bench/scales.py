"""Does `predict` find people framed unlike FLIC? Frames shrunk into a canvas of their size, and tiled, 1/8 to 1."""

# Usage (from the repository root):
#   python bench/scales.py [--flic ../shared/flic/FLIC] [--split val|test] [-n 72] [--search scan|detector]
#                          [--person-checkpoint P] [--min-score S] [--factors 0.125,0.25,0.5,1] [--grids 2,3]
# Builds photos framed unlike FLIC from n whole FLIC frames (cnnmrf/evaluation/layouts.py): each frame shrunk by each
# of --factors and pasted at a random place (seed --seed) in a flat grey canvas of its own size (720x480; factor 1 is
# the frame itself), and the frames tiled g x g into one such canvas for each of --grids (each shrunk by 1/g; the
# last canvas may have empty cells). Each canvas goes, in memory, through `predict`'s pipeline (PosePredictor: the
# search, verification, re-fit and --min-score, default the checkpoint's, as `cnnmrf predict`; no JPEG round trip, no
# reduced decode). Reports per layout, per shrink factor (pads and tiles pooled) and per torso-box height (a share of
# the canvas height) the share of the annotated people found (a reported torso box matching theirs by
# cnnmrf.evaluation.frames.matches_person, as bench/proposals.py counts; joints of the closest such) and PCK@0.2 of
# wrists and elbows over all annotated people (a miss counts wrong; FLIC's normaliser, the true lsho-rhip distance),
# reported people matching no annotated one, and seconds per canvas. --split val (the default): frames holding the
# held-out rows of the checkpoint's training run; --split test: FLIC's test frames (for the final report only).
# Also the shared helpers of bench/peers.py: which frames (flic_frames), matching (assign) and scoring (summarise).

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.options import SearchMethod, person_detector_for
from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.flic import FlicSource, observer_centric, one_box_per_person
from cnnmrf.evaluation.frames import Frame, matches_person, read_frame
from cnnmrf.evaluation.holdout import resolve_holdout
from cnnmrf.evaluation.layouts import Layout, padded, tiled
from cnnmrf.evaluation.pck import evaluate_pck
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import load_checkpoint, preprocess_from_checkpoint

FLIC = Path(__file__).resolve().parents[2] / "shared/flic/FLIC"
HEIGHT_BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 1.01)  # torso-box height as a share of the canvas height


def flic_frames(flic: FlicSource, split: str, checkpoint: Path, n: int, seed: int = 0) -> list[Frame]:
    """``n`` whole frames of FLIC with all their annotated people of the split, joints in the checkpoint's labels.

    Args:
        flic: the FLIC copy.
        split: ``val``: frames holding the held-out rows of the checkpoint's training run (its ``val_fraction`` and
            ``seed``, over FLIC's training examples in examples.mat order, as training parts them); ``test``: FLIC's
            test frames.
        checkpoint: the pose checkpoint (its held-out rows, its label convention: observer-centric or not).
        n: how many frames: the first ``n`` distinct frames of the split's rows in a random order (``seed``).
        seed: the order's seed.
    """
    state = load_checkpoint(checkpoint)
    split_name = "train" if split == "val" else "test"
    examples = [e for e in flic.examples() if e.split == split_name]
    rows = np.arange(len(examples))
    if split == "val":
        holdout, note = resolve_holdout(state.get("train_config"), None, None, False, checkpoint)
        if note:
            print(note, flush=True)
        rows = holdout_rows(len(examples), holdout.val_fraction, holdout.seed)[1]
    order = np.random.default_rng(seed).permutation(rows)
    files = list(dict.fromkeys(examples[i].file for i in order))[:n]
    observer = preprocess_from_checkpoint(state, checkpoint).observer_centric
    frames = []
    for file in files:
        mine = [e for e in examples if e.file == file]
        joints = np.stack([e.joints for e in mine])
        joints = observer_centric(joints) if observer else joints
        frames.append(Frame(file, *one_box_per_person(np.stack([e.torsobox for e in mine]), joints)))
    return frames


def assign(boxes: np.ndarray, joints: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Match one photo's reported people to its annotated ones as bench/proposals.py counts them: an annotated person
    is found if a reported torso box matches theirs (:func:`matches_person`), and takes the joints of the closest
    (by box centre) such reported person. One reported person may serve several annotated ones (people close
    together). FLIC's people annotated twice are one person here (:func:`one_box_per_person`, as ``flic_frames``
    reads them).

    Shapes: boxes (N, 4), joints (N, K, 2), truth (P, 4) torso boxes.

    Returns:
        (P,) whether each annotated person was found, (P, K, 2) the joints reported for each (NaN where missed), and
        how many reported people match no annotated one.
    """
    boxes, truth = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(truth).reshape(-1, 4)
    match = matches_person(boxes, truth)  # (N, P)
    gap = np.linalg.norm((boxes[:, None, :2] + boxes[:, None, 2:] - truth[None, :, :2] - truth[None, :, 2:]), axis=-1)
    found = match.any(axis=0)  # (P,)
    closest = np.argmin(np.where(match, gap, np.inf), axis=0) if len(boxes) else np.zeros(len(truth), np.int64)
    pred = np.full((len(truth), len(JOINT_NAMES), 2), np.nan)
    pred[found] = np.asarray(joints, dtype=np.float64).reshape(-1, len(JOINT_NAMES), 2)[closest[found]]
    return found, pred, int((~match.any(axis=1)).sum())


def summarise(
    found: list[np.ndarray], pred: list[np.ndarray], truth: list[np.ndarray], thresholds: tuple[float, ...] = (0.2,)
) -> dict:
    """People found and PCK over all annotated people (misses wrong) of a set of photos.

    Args:
        found: (P_i,) bool per photo.
        pred: (P_i, K, 2) reported joints per photo, NaN where missed.
        truth: (P_i, K, 2) annotated joints per photo.
        thresholds: PCK thresholds r.

    Returns:
        ``people``, ``found`` (share), and per threshold PCK (percent) of ``wrist``, ``elbow``, ``arms`` (their
        mean), ``mean`` (all 10 joints) and ``mean_limbs`` (the 8 arm and hip joints).
    """
    hits = np.concatenate(found) if found else np.zeros(0, bool)
    result: dict = {"people": int(hits.size), "found": round(float(hits.mean()), 4) if hits.size else None}
    if not hits.size:
        return result
    pck = evaluate_pck(np.concatenate(pred), np.concatenate(truth), thresholds=thresholds)
    for r in thresholds:
        values = {g: pck.at(g, r) for g in ("wrist", "elbow", "mean", "mean_limbs")}
        values["arms"] = (values["wrist"] + values["elbow"]) / 2
        result[f"pck@{r:g}"] = {g: round(100 * values[g], 2) for g in ("wrist", "elbow", "arms", "mean", "mean_limbs")}
    return result


def build_layouts(
    images: list[Image.Image], frames: list[Frame], factors: list[float], grids: list[int], seed: int
) -> dict[str, list[Layout]]:
    """Each layout's canvases: ``pad f`` (every frame shrunk by f, at a place drawn with ``seed``) and ``tile gxg``."""
    layouts: dict[str, list[Layout]] = {}
    for factor in factors:
        rng = np.random.default_rng(seed)
        name = f"pad {factor:g}"
        layouts[name] = [padded(image, f.boxes, f.joints, factor, rng) for image, f in zip(images, frames)]
    for grid in grids:
        pieces = [(image, f.boxes, f.joints) for image, f in zip(images, frames)]
        step = grid * grid
        layouts[f"tile {grid}x{grid}"] = [tiled(pieces[i : i + step], grid) for i in range(0, len(pieces), step)]
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=FLIC, help="the FLIC folder or zip")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="tune on val; test for the report")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a calibrated checkpoint (default: bundled)")
    parser.add_argument("--search", choices=("scan", "detector"), default="detector", help="predict's --search")
    parser.add_argument("--person-checkpoint", type=Path, default=None, help="for --search detector; default: bundled")
    parser.add_argument("--min-score", type=float, default=None, help="default: the checkpoint's, as predict")
    parser.add_argument("-n", type=int, default=72, help="FLIC frames (seed 0; 72: whole 2x2 and 3x3 canvases)")
    parser.add_argument("--factors", default="0.125,0.25,0.5,1", help="shrink factors of the padded frames")
    parser.add_argument("--grids", default="2,3", help="tiled layouts: g x g frames in one canvas")
    parser.add_argument("--seed", type=int, default=0, help="the padded frames' places")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.person_checkpoint is not None and args.search != "detector":
        parser.error("--person-checkpoint is for --search detector")
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint()
    person = person_detector_for(SearchMethod(args.search), args.person_checkpoint)
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu", person=person, min_score=args.min_score)
    flic = FlicSource(args.flic)
    frames = flic_frames(flic, args.split, checkpoint, args.n)
    images = [read_frame(flic, f.file)[0] for f in frames]
    factors = [float(v) for v in args.factors.split(",")]
    layouts = build_layouts(images, frames, factors, [int(v) for v in args.grids.split(",")], args.seed)
    result: dict = {
        "benchmark": "scales",
        "split": args.split,
        "search": predictor.search_name,
        "min_score": predictor.threshold,
        "threads": torch.get_num_threads(),
        "frames": len(frames),
        "load_average_before": round(os.getloadavg()[0], 2),
        "layouts": {},
    }
    pooled: dict[str, list] = {}  # per person, over all layouts: found, joints, truth, scale, height share
    predictor.predict_image(images[0])  # warm-up
    for name, canvases in layouts.items():
        found, pred, truth, unannotated = [], [], [], 0
        start = time.perf_counter()
        for layout in canvases:
            people = predictor.predict_image(layout.image).people
            boxes = np.array([p.box for p in people]).reshape(-1, 4)
            joints = np.array([p.joints for p in people]).reshape(-1, len(JOINT_NAMES), 2)
            hit, mine, extra = assign(boxes, joints, layout.boxes)
            found.append(hit)
            pred.append(mine)
            truth.append(layout.joints)
            unannotated += extra
            heights = (layout.boxes[:, 3] - layout.boxes[:, 1]) / layout.image.size[1]
            for key, values in (("found", hit), ("pred", mine), ("truth", layout.joints)):
                pooled.setdefault(key, []).append(values)
            pooled.setdefault("scale", []).append(layout.scale)
            pooled.setdefault("height", []).append(heights)
        seconds = (time.perf_counter() - start) / max(len(canvases), 1)
        row = summarise(found, pred, truth)
        row.update(canvases=len(canvases), reported_unannotated=unannotated, seconds_per_canvas=round(seconds, 3))
        result["layouts"][name] = row
        print(name, json.dumps(row), flush=True)
    everyone = {key: np.concatenate(values) for key, values in pooled.items()}
    result["by_scale"] = {
        f"{scale:g}": subset(everyone, np.isclose(everyone["scale"], scale, atol=1e-3))
        for scale in sorted({round(float(s), 3) for s in everyone["scale"]})
    }
    result["by_torso_height"] = {
        f"{low:g}-{high:g}": subset(everyone, (everyone["height"] >= low) & (everyone["height"] < high))
        for low, high in zip(HEIGHT_BINS[:-1], HEIGHT_BINS[1:])
    }
    result["all"] = subset(everyone, np.ones(len(everyone["found"]), bool))
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def subset(everyone: dict[str, np.ndarray], chosen: np.ndarray) -> dict:
    """:func:`summarise` of the pooled people ``chosen`` ((P,) bool)."""
    return summarise([everyone["found"][chosen]], [everyone["pred"][chosen]], [everyone["truth"][chosen]])


if __name__ == "__main__":
    main()
