"""Fit a checkpoint's score calibration on FLIC validation frames (`cnnmrf calibrate`), and measure the search with it.

Everything is fitted on the validation rows of the training split (held out from training by ``val_fraction`` and
``seed``, as in `train-*` and `evaluate --split val`), never on the test split:

1. **joint scores**: the model's crops of the validation rows (the annotated torso boxes); a joint is correct when
   within 0.1 torso lengths (PCK's normaliser) of the truth; Platt scaling per joint and per output;
2. **face geometry**: faces the cascade finds that contain an annotated nose, against that person's torso box;
3. **person verifier**: every search candidate in the validation frames (positive when its box matches an annotated
   person, negative when far from all of them, left out in between), in a person-free region of each frame, and in
   synthetic clutter (all negative); a logistic regression on :func:`cnnmrf.inference.calibration.person_features`;
4. **default --min-score**: the smallest threshold at which at most ``max_false_rate`` of the person-free images
   (regions and clutter) get a false person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import open_dataset, read_split
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.evaluate import check_geometry
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.files import check_output_file
from cnnmrf.inference.calibration import (
    Calibration,
    JointCalibration,
    PersonVerifier,
    expected_calibration_error,
)
from cnnmrf.inference.crops import predict_rows
from cnnmrf.inference.faces import FaceGeometry, detect_faces, fit_face_geometry
from cnnmrf.inference.photos import Candidates, PosePredictor, load_image
from cnnmrf.inference.search import non_maximum_suppression
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, load_checkpoint, save_checkpoint

NOSE = JOINT_NAMES.index("nose")
CORRECT_WITHIN = 0.1  # a joint score is P(within this many torso lengths), PCK's normaliser
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # --min-score candidates


@dataclass
class CalibrateOptions:
    """Which frames calibration is fitted on, and what the default threshold must achieve."""

    val_fraction: float = 0.1  # the training run's validation share (TrainConfig.val_fraction)
    seed: int = 0  # the training run's --seed, which drew the validation rows
    max_frames: int = 0  # validation frames used for faces and the verifier (0: all)
    clutter: int = 40  # synthetic person-free images added as negatives
    max_false_rate: float = 0.03  # the default --min-score lets at most this share of person-free images get a person


@dataclass
class Frame:
    """A FLIC frame and every annotated person in it (original pixels)."""

    file: str
    boxes: np.ndarray  # (P, 4) torso boxes
    joints: np.ndarray  # (P, K, 2)


def split_frames(data: Path, split: str, rows: np.ndarray) -> list[Frame]:
    """The distinct frames of ``rows`` of a split, each with all its annotated people in that split."""
    table = read_split(data, split, ("file", "torsobox", "joints"))
    files = np.asarray(table["file"]).astype(str)
    wanted = dict.fromkeys(files[np.asarray(rows, dtype=np.int64)])
    frames = []
    for file in wanted:
        mine = np.flatnonzero(files == file)
        frames.append(Frame(str(file), table["torsobox"][mine].astype(np.float64), table["joints"][mine]))
    return frames


def matches_person(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Whether found torso boxes are an annotated one's: centre within half its height, height within 0.7-1.43x.

    Shapes: found (N, 4), truth (P, 4) -> (N, P) bool.
    """
    found, truth = (
        np.asarray(found, dtype=np.float64).reshape(-1, 4),
        np.asarray(truth, dtype=np.float64).reshape(-1, 4),
    )
    height = truth[:, 3] - truth[:, 1]  # (P,)
    gap = np.linalg.norm(
        ((found[:, None, :2] + found[:, None, 2:]) - (truth[None, :, :2] + truth[None, :, 2:])) / 2, axis=-1
    )  # (N, P)
    ratio = (found[:, None, 3] - found[:, None, 1]) / height[None]  # (N, P)
    return (gap < 0.5 * height[None]) & (ratio > 0.7) & (ratio < 1.43)


def far_from_people(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) whether each found box's centre is over one torso height from every annotated torso box's centre."""
    found, truth = (
        np.asarray(found, dtype=np.float64).reshape(-1, 4),
        np.asarray(truth, dtype=np.float64).reshape(-1, 4),
    )
    gap = np.linalg.norm(
        ((found[:, None, :2] + found[:, None, 2:]) - (truth[None, :, :2] + truth[None, :, 2:])) / 2, axis=-1
    )  # (N, P)
    return (gap > (truth[:, 3] - truth[:, 1])[None]).all(axis=-1)


def person_free_region(size: tuple[int, int], frame: Frame, min_width: float = 0.25) -> np.ndarray | None:
    """The widest full-height strip at the left or right of a frame clear of every annotated person (their joints
    and torso boxes, widened by half a torso height), as a box (4,); None if narrower than ``min_width`` of the
    frame. Unannotated people may still be there: FLIC labels one or two people per frame."""
    width, height = size
    margin = 0.5 * (frame.boxes[:, 3] - frame.boxes[:, 1])[:, None]  # (P, 1)
    xs = np.concatenate([frame.boxes[:, [0, 2]], frame.joints[..., 0]], axis=1)  # (P, 2 + K)
    left = float(np.nanmin(xs - margin))
    right = float(np.nanmax(xs + margin))
    strips = [np.array([0.0, 0.0, max(left, 0.0), height]), np.array([min(right, width), 0.0, width, height])]
    best = max(strips, key=lambda b: b[2] - b[0])
    return best if best[2] - best[0] >= min_width * width else None


def synthetic_clutter(count: int, seed: int, size: tuple[int, int] = (480, 360)) -> list[Image.Image]:
    """Person-free photos: colour gradients under random rectangles, ellipses and lines, blurred and noisy."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        ramp = np.linspace(0, 1, size[0])[None, :, None] * rng.uniform(-80, 80, 3) + rng.uniform(40, 215, 3)
        image = Image.fromarray(np.broadcast_to(ramp, (size[1], size[0], 3)).clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(5, 40)):
            x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
            w, h = rng.uniform(5, size[0] / 2), rng.uniform(5, size[1] / 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = rng.integers(3)
            if shape == 0:
                draw.rectangle([x, y, x + w, y + h], fill=colour)
            elif shape == 1:
                draw.ellipse([x, y, x + w, y + h], fill=colour)
            else:
                draw.line([x, y, x + w, y + h], fill=colour, width=int(rng.integers(1, 12)))
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))
        noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, rng.uniform(0, 12), (size[1], size[0], 3))
        images.append(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
    return images


def fit_joint_calibration(
    predictor: PosePredictor, data: Path, split: str, rows: np.ndarray
) -> tuple[dict[str, JointCalibration], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Platt maps of joint peak scores for every model output, from crops of ``rows`` (annotated boxes).

    Returns:
        The maps, and per output the (N, K) scores and (N, K) outcomes (NaN where unlabelled) they were fitted on.
    """
    sets = predict_rows(
        predictor.model,
        data,
        split,
        rows,
        device=predictor.device,
        decoder=Decoder(sigma=predictor.preprocess.heatmap_sigma),
    )
    truth = read_split(data, split, ("joints",), rows)["joints"]  # (N, K, 2)
    samples = {}
    for name, joints in sets.items():
        distance = normalized_distances(joints.joints, truth)  # (N, K)
        samples[name] = (joints.scores, np.where(np.isfinite(distance), distance <= CORRECT_WITHIN, np.nan))
    return {name: JointCalibration.fit(*s) for name, s in samples.items()}, samples


def frame_faces(flic: FlicSource, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """Faces found in FLIC frames that hold an annotated nose, and that person's torso box: (M, 4), (M, 4)."""
    faces, torsos = [], []
    for frame in frames:
        image, factor = load_image(flic.read_image_bytes(frame.file))
        for face in detect_faces(image, factor):
            nose = frame.joints[:, NOSE]  # (P, 2)
            inside = (nose[:, 0] > face[0]) & (nose[:, 0] < face[2]) & (nose[:, 1] > face[1]) & (nose[:, 1] < face[3])
            if inside.sum() == 1:
                faces.append(face)
                torsos.append(frame.boxes[np.argmax(inside)])
    return np.array(faces).reshape(-1, 4), np.array(torsos).reshape(-1, 4)


@dataclass
class SearchSample:
    """Search candidates of labelled photos, for fitting or measuring the verifier."""

    features: np.ndarray  # (N, F)
    labels: np.ndarray  # (N,) 1 person, 0 not, NaN ambiguous
    boxes: np.ndarray  # (N, 4)
    photo: np.ndarray  # (N,) which photo each candidate is in
    person_free: np.ndarray  # (num_photos,) whether the photo holds nobody (a region or clutter)
    found_joints: np.ndarray  # (N, K, 2) the reported joints of each candidate
    truth: list[Frame | None]  # per photo: its annotations (None: person-free)


def search_sample(
    predictor: PosePredictor,
    flic: FlicSource,
    frames: Sequence[Frame],
    clutter: Sequence[Image.Image] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> SearchSample:
    """Run the search on whole frames, on a person-free region of each frame, and on clutter; label candidates."""
    features, labels, boxes, photo, free, joints, truth = [], [], [], [], [], [], []
    total = len(frames) + len(clutter)

    def add(found: Candidates, label: np.ndarray, frame: Frame | None) -> None:
        features.append(found.features())
        labels.append(label)
        boxes.append(found.boxes)
        photo.append(np.full(len(label), len(free)))
        joints.append(found.sets["spatial" if "spatial" in found.sets else "detector"].joints)
        free.append(frame is None)
        truth.append(frame)

    for done, frame in enumerate(frames):
        image, factor = load_image(flic.read_image_bytes(frame.file))
        found = predictor.candidates([(image, factor)], [None])
        hit = matches_person(found.boxes, frame.boxes).any(axis=1)
        add(found, np.where(hit, 1.0, np.where(far_from_people(found.boxes, frame.boxes), 0.0, np.nan)), frame)
        region = person_free_region(image.size, frame) if factor == 1.0 else None
        if region is not None:
            strip = image.crop(tuple(int(round(v)) for v in region))
            found = predictor.candidates([(strip, 1.0)], [None])
            add(found, np.zeros(len(found.proposals)), None)
        if on_progress is not None:
            on_progress(done + 1, total)
    for done, image in enumerate(clutter):
        found = predictor.candidates([(image, 1.0)], [None])
        add(found, np.zeros(len(found.proposals)), None)
        if on_progress is not None:
            on_progress(len(frames) + done + 1, total)
    k = len(JOINT_NAMES)
    return SearchSample(
        np.concatenate(features) if features else np.zeros((0, 0)),
        np.concatenate(labels),
        np.concatenate(boxes).reshape(-1, 4),
        np.concatenate(photo).astype(np.int64),
        np.array(free, dtype=bool),
        np.concatenate(joints).reshape(-1, k, 2),
        truth,
    )


def search_metrics(sample: SearchSample, scores: np.ndarray, threshold: float, overlap: float) -> dict[str, float]:
    """What `predict` would report at ``threshold``: annotated people found, false people in person-free photos,
    and the person score's calibration (ECE over labelled candidates)."""
    found = wanted = false = free = 0
    for p, frame in enumerate(sample.truth):
        mine = np.flatnonzero(sample.photo == p)
        kept = mine[non_maximum_suppression(sample.boxes[mine], scores[mine], overlap)] if len(mine) else mine
        kept = kept[scores[kept] >= threshold]
        if frame is None:
            free += 1
            false += bool(len(kept))
        else:
            wanted += len(frame.boxes)
            found += int(matches_person(sample.boxes[kept], frame.boxes).any(axis=0).sum())
    labelled = np.isfinite(sample.labels)
    return {
        "people_found": found / max(wanted, 1),
        "false_people_rate": false / max(free, 1),
        "person_score_ece": expected_calibration_error(scores[labelled], sample.labels[labelled]),
        "annotated_people": wanted,
        "person_free_photos": free,
    }


def fit_calibration(
    predictor: PosePredictor,
    data: Path,
    flic: FlicSource,
    options: CalibrateOptions | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Fit joint maps, face geometry, the person verifier and the default threshold (see the module docstring).

    Args:
        predictor: the loaded model (its calibration, if any, is ignored and replaced).
        data: the HDF5 dataset made by `cnnmrf preprocess` from ``flic``.
        flic: the FLIC copy the dataset was made from (whole frames are read from it).
        options: which frames, and the false-person budget of the default threshold.
        on_progress: called with (stage, done, total).

    Returns:
        The calibration; its ``report`` holds what was measured on the validation frames.
    """
    options = options or CalibrateOptions()
    total = len(read_split(data, "train", ("file",))["file"])
    rows = holdout_rows(total, options.val_fraction, options.seed)[1]
    joint_maps, samples = fit_joint_calibration(predictor, data, "train", rows)
    frames = split_frames(data, "train", rows)
    if options.max_frames:
        frames = frames[: options.max_frames]
    faces, torsos = frame_faces(flic, frames)
    geometry = fit_face_geometry(faces, torsos) if len(faces) >= 10 else FaceGeometry()
    searching = replace(predictor, calibration=None, face_geometry=geometry, max_people=None)
    clutter = synthetic_clutter(options.clutter, options.seed)
    progress = None if on_progress is None else lambda done, total: on_progress("search", done, total)
    sample = search_sample(searching, flic, frames, clutter, progress)
    labelled = np.isfinite(sample.labels)
    positives, negatives = int((sample.labels[labelled] == 1).sum()), int((sample.labels[labelled] == 0).sum())
    if positives < 5 or negatives < 5:
        raise CnnmrfError(
            f"the search found {positives} annotated people and {negatives} non-people in {len(frames)} validation "
            "frames: too few to fit the person score (at least 5 of each); use more frames (--max-frames 0) or a "
            "model that finds people"
        )
    verifier = PersonVerifier.fit(sample.features[labelled], sample.labels[labelled])
    scores = verifier.probability(sample.features)
    overlap = predictor.search.person_overlap
    by_threshold = {float(t): search_metrics(sample, scores, t, overlap) for t in THRESHOLDS}
    allowed = [t for t, m in by_threshold.items() if m["false_people_rate"] <= options.max_false_rate]
    min_score = min(allowed) if allowed else float(THRESHOLDS[-1])
    report = {
        "fitted_on": f"training split rows held out by val_fraction {options.val_fraction}, seed {options.seed}",
        "joint_rows": int(len(rows)),
        "joint_score_ece": {
            name: expected_calibration_error(joint_maps[name].probability(s), c) for name, (s, c) in samples.items()
        },
        "faces_matched": int(len(faces)),
        "frames": len(frames),
        "candidates": int(labelled.sum()),
        "positives": int(np.nansum(sample.labels)),
        "min_score": min_score,
        "at_min_score": by_threshold[min_score],
    }
    return Calibration(joint_maps, verifier, geometry, min_score, report)


def calibrate_checkpoint(
    data: Path,
    flic: Path,
    checkpoint: Path,
    out: Path,
    options: CalibrateOptions | None = None,
    force: bool = False,
    device: str = "auto",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Fit a checkpoint's calibration (:func:`fit_calibration`) and write the checkpoint with it to ``out``.

    Raises:
        CnnmrfError: ``out`` exists without ``force``, a missing or foreign dataset, FLIC copy or checkpoint, or a
            dataset of another crop geometry than the checkpoint's.
    """
    check_output_file(out, force)
    with open_dataset(data) as dataset:
        prep = dataset.config
        if "train" not in dataset.splits or dataset.num_rows("train") == 0:
            raise CnnmrfError(f"{data} has no training split to take validation rows from")
    predictor = PosePredictor.from_checkpoint(checkpoint, device)
    check_geometry(predictor.preprocess, prep, checkpoint, data)
    calibration = fit_calibration(predictor, data, FlicSource(flic), options, on_progress)
    state = load_checkpoint(checkpoint)
    state[CALIBRATION_KEY] = calibration.to_dict()
    save_checkpoint(out, {k: v for k, v in state.items() if k != "format"})
    return calibration
