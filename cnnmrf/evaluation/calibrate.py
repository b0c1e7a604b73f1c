"""Fit a checkpoint's score calibration on FLIC validation frames (`cnnmrf calibrate`), and measure the search with it.

Everything is fitted on the validation rows of the training split (held out from training by ``val_fraction`` and
``seed``, the checkpoint's own: see :mod:`cnnmrf.evaluation.holdout`), never on the test split, and only on enough of
them (:data:`cnnmrf.evaluation.options.MINIMUMS`):

1. **joint scores**: the model's crops of the validation rows (the annotated torso boxes); a joint is correct when
   within 0.1 torso lengths (PCK's normaliser) of the truth; Platt scaling per joint and per output;
2. **face geometry**: faces the cascade finds that contain an annotated nose, against that person's torso box;
3. **person verifier**: every search candidate in the validation frames (positive when its box matches an annotated
   person, negative when it lies on one without matching; boxes away from the annotated people are left out, as FLIC
   leaves many people unannotated) and in person-free photos (:func:`person_free_photos`, all negative); a logistic
   regression on :func:`cnnmrf.inference.calibration.person_features`, and on the person detector's evidence
   (:func:`~cnnmrf.inference.calibration.evidence_feature`) where the search is that detector's;
4. **default --min-score**: the smallest threshold at which at most ``max_false_rate`` of other person-free photos
   (half as many, drawn with ``seed + 1``, not fitted on) get a person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import open_dataset, read_split
from cnnmrf.devices import Precision, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.evaluate import check_geometry
from cnnmrf.evaluation.frames import (
    Frame,
    far_from_people,
    matches_person,
    person_free_photos,
    person_free_region,
    read_frame,
    split_frames,
)
from cnnmrf.evaluation.holdout import resolve_holdout
from cnnmrf.evaluation.options import MINIMUMS, CalibrateOptions
from cnnmrf.evaluation.pck import normalized_distances
from cnnmrf.files import check_outside_package, output_file
from cnnmrf.inference.calibration import (
    Calibration,
    JointCalibration,
    PersonVerifier,
    expected_calibration_error,
)
from cnnmrf.inference.crops import predict_rows
from cnnmrf.inference.faces import FaceGeometry, detect_faces, fit_face_geometry
from cnnmrf.inference.people import select_people
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.search import SearchConfig
from cnnmrf.inference.topdown import Candidates
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, load_checkpoint, save_checkpoint
from cnnmrf.models.person import PersonDetector

NOSE = JOINT_NAMES.index("nose")
CORRECT_WITHIN = 0.1  # a joint score is P(within this many torso lengths), PCK's normaliser
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # --min-score candidates


def fit_joint_calibration(
    predictor: PosePredictor, data: Path, split: str, rows: np.ndarray
) -> tuple[dict[str, JointCalibration], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Platt maps of joint peak scores for every model output, from crops of ``rows`` (annotated boxes).

    Returns:
        The maps, and per output the (N, K) scores and (N, K) outcomes (NaN where unlabelled) they were fitted on.
    """
    # as predict scores its people (float32, whatever the search's precision: PosePredictor.dtype)
    sets = predict_rows(predictor.model, data, split, rows, device=predictor.device, config=predictor.crop_config)
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
        image, factor = read_frame(flic, frame.file)
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
    labels: np.ndarray  # (N,) 1 an annotated person, 0 not a person's torso box, NaN unknown
    boxes: np.ndarray  # (N, 4) in the photo's pixels
    photo: np.ndarray  # (N,) which photo each candidate is in
    found_joints: np.ndarray  # (N, K, 2) the reported joints of each candidate
    truth: list[Frame | None]  # per photo: its annotations (None: meant to be person-free)
    kinds: list[str]  # per photo: "frame" (a whole FLIC frame), "region" (a strip of one) or "clutter"
    strips: list[np.ndarray | None]  # per photo: a region's box in its frame (None for other kinds)


def search_sample(
    predictor: PosePredictor,
    flic: FlicSource,
    frames: Sequence[Frame],
    clutter: Sequence[Image.Image] = (),
    regions: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SearchSample:
    """Run the search on whole frames (and, with ``regions``, on a strip of each frame clear of its annotated people)
    and on person-free clutter, and label the candidates.

    A frame's candidate is positive when its box matches an annotated person's, negative when it lies on an annotated
    person (centre within a torso height of theirs) without matching, and unknown elsewhere: FLIC leaves many people
    unannotated, so a box away from the annotated ones may well hold a person (the same is true of regions, which are
    therefore not labelled: they are for measuring, by eye where it matters). Every clutter candidate is negative.
    """
    features, labels, boxes, photo, joints, truth, kinds, strips = [], [], [], [], [], [], [], []
    total = len(frames) + len(clutter)

    def add(found: Candidates, label: np.ndarray, frame: Frame | None, kind: str, strip: np.ndarray | None) -> None:
        features.append(found.features())
        labels.append(label)
        boxes.append(found.boxes)
        photo.append(np.full(len(label), len(kinds)))
        joints.append(found.final_joints())
        truth.append(frame)
        kinds.append(kind)
        strips.append(strip)

    for done, frame in enumerate(frames):
        image, factor = read_frame(flic, frame.file)
        found = predictor.candidates([(image, factor)], [None])
        hit = matches_person(found.boxes, frame.boxes).any(axis=1)
        near = ~far_from_people(found.boxes, frame.boxes)
        add(found, np.where(hit, 1.0, np.where(near, 0.0, np.nan)), frame, "frame", None)
        region = person_free_region(image.size, frame) if regions and factor == 1.0 else None
        if region is not None:
            found = predictor.candidates([(image.crop(tuple(int(round(v)) for v in region)), 1.0)], [None])
            add(found, np.full(len(found.proposals), np.nan), None, "region", region)
        if on_progress is not None:
            on_progress(done + 1, total)
    for done, image in enumerate(clutter):
        found = predictor.candidates([(image, 1.0)], [None])
        add(found, np.zeros(len(found.proposals)), None, "clutter", None)
        if on_progress is not None:
            on_progress(len(frames) + done + 1, total)
    k = len(JOINT_NAMES)
    return SearchSample(
        np.concatenate(features) if features else np.zeros((0, 0)),
        np.concatenate(labels),
        np.concatenate(boxes).reshape(-1, 4),
        np.concatenate(photo).astype(np.int64),
        np.concatenate(joints).reshape(-1, k, 2),
        truth,
        kinds,
        strips,
    )


def reported(sample: SearchSample, scores: np.ndarray, threshold: float, search: SearchConfig) -> list[np.ndarray]:
    """Per photo, the candidates `predict` would report at ``threshold`` (indices into the sample), picked by the
    same :func:`select_people` as :class:`PosePredictor` picks them."""
    return select_people(sample.boxes, scores, sample.photo, [threshold] * len(sample.kinds), search)


def search_metrics(
    sample: SearchSample, scores: np.ndarray, threshold: float, search: SearchConfig
) -> dict[str, float]:
    """What `predict` would report at ``threshold``: annotated people found, person-free photos (clutter, and regions
    when sampled) that get a person, and the person score's calibration (ECE over labelled candidates)."""
    found = wanted = 0
    flagged: dict[str, list[bool]] = {"clutter": [], "region": []}
    for kept, frame, kind in zip(reported(sample, scores, threshold, search), sample.truth, sample.kinds):
        if frame is None:
            flagged[kind].append(bool(len(kept)))
        else:
            wanted += len(frame.boxes)
            found += int(matches_person(sample.boxes[kept], frame.boxes).any(axis=0).sum())
    labelled = np.isfinite(sample.labels)
    return {
        "people_found": found / max(wanted, 1),
        "false_people_rate": float(np.mean(flagged["clutter"])) if flagged["clutter"] else 0.0,
        "region_people_rate": float(np.mean(flagged["region"])) if flagged["region"] else float("nan"),
        "person_score_ece": expected_calibration_error(scores[labelled], sample.labels[labelled]),
        "annotated_people": wanted,
        "clutter_photos": len(flagged["clutter"]),
        "regions": len(flagged["region"]),
    }


def check_clutter(options: CalibrateOptions) -> None:
    """Refuse, before any work, too few person-free photos to check the default --min-score on (:data:`MINIMUMS`).

    Raises:
        CnnmrfError: half of ``options.clutter`` is below ``MINIMUMS.check_photos``.
    """
    least = MINIMUMS.check_photos
    if options.clutter // 2 < least:
        raise CnnmrfError(
            f"--clutter {options.clutter} leaves {options.clutter // 2} person-free photos to check the default "
            f"--min-score on; calibrate needs at least {least} (--clutter {2 * least} or more)"
        )


def check_frames(flic: FlicSource, frames: Sequence[Frame], options: CalibrateOptions, available: int) -> None:
    """Refuse, before the search, too few validation frames or annotated people (:data:`MINIMUMS`), or a frame that
    the FLIC copy lacks or cannot decode.

    Raises:
        CnnmrfError: naming the shortfall (and what to change), or the frame.
    """
    people = sum(len(frame.boxes) for frame in frames)
    if len(frames) < MINIMUMS.frames or people < MINIMUMS.people:
        held_out = f"val_fraction {options.val_fraction:g}, seed {options.seed}"
        where = (
            f"--max-frames {options.max_frames} leaves"
            if len(frames) < available
            else f"the training split's held-out rows ({held_out}) hold"
        )
        raise CnnmrfError(
            f"{where} {len(frames)} validation frames with {people} annotated people; calibrate fits on at least "
            f"{MINIMUMS.frames} frames and {MINIMUMS.people} people"
        )
    for frame in frames:  # a missing or damaged frame is said now, not after the search
        read_frame(flic, frame.file)


def fit_calibration(
    predictor: PosePredictor,
    data: Path,
    flic: FlicSource,
    options: CalibrateOptions,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Fit joint maps, face geometry, the person verifier and the default threshold (see the module docstring).

    Args:
        predictor: the loaded model (its calibration, if any, is ignored and replaced).
        data: the HDF5 dataset made by `cnnmrf preprocess` from ``flic``.
        flic: the FLIC copy the dataset was made from (whole frames are read from it).
        options: which frames (``val_fraction`` and ``seed`` given: see :mod:`cnnmrf.evaluation.holdout`), and the
            false-person budget of the default threshold.
        on_progress: called with (stage, done, total).

    Returns:
        The calibration; its ``report`` holds what was measured on the validation frames.

    Raises:
        CnnmrfError: less evidence than :data:`MINIMUMS`, or a missing or unreadable frame.
    """
    if options.val_fraction is None or options.seed is None:
        raise ValueError("fit_calibration needs the training run's val_fraction and seed")
    check_clutter(options)
    total = len(read_split(data, "train", ("file",))["file"])
    rows = holdout_rows(total, options.val_fraction, options.seed)[1]
    frames = split_frames(data, "train", rows)
    available = len(frames)
    if options.max_frames:
        frames = frames[: options.max_frames]
    check_frames(flic, frames, options, available)
    joint_maps, samples = fit_joint_calibration(predictor, data, "train", rows)
    faces, torsos = frame_faces(flic, frames)
    geometry = fit_face_geometry(faces, torsos) if len(faces) >= 10 else FaceGeometry()
    searching = replace(predictor, calibration=None, face_geometry=geometry, max_people=None)
    clutter = person_free_photos(options.clutter, options.seed)
    progress = None if on_progress is None else lambda done, total: on_progress("search", done, total)
    sample = search_sample(searching, flic, frames, clutter, on_progress=progress)
    # the threshold's false-person rate is measured on other person-free photos than the verifier is fitted on
    check = search_sample(searching, flic, [], person_free_photos(options.clutter // 2, options.seed + 1))
    labelled = np.isfinite(sample.labels)
    positives, negatives = int((sample.labels[labelled] == 1).sum()), int((sample.labels[labelled] == 0).sum())
    if positives < MINIMUMS.people or negatives < MINIMUMS.people:
        raise CnnmrfError(
            f"the search found {positives} annotated people and {negatives} non-people in {len(frames)} validation "
            f"frames: too few to fit the person score (at least {MINIMUMS.people} of each); use more frames "
            "(--max-frames 0) or a model that finds people"
        )
    # The person detector's evidence (the last column) is read where the search ran it, on every candidate
    with_evidence = bool(len(sample.features)) and bool(np.isfinite(sample.features[:, -1]).all())
    features = sample.features if with_evidence else sample.features[:, :-1]
    verifier = PersonVerifier.fit(features[labelled], sample.labels[labelled])
    scores = verifier.probability(sample.features)
    check_scores = verifier.probability(check.features) if len(check.labels) else np.zeros(0)
    by_threshold = {
        float(t): {
            **search_metrics(sample, scores, t, predictor.search),
            "false_people_rate": search_metrics(check, check_scores, t, predictor.search)["false_people_rate"],
            "clutter_photos": len(check.kinds),
        }
        for t in THRESHOLDS
    }
    allowed = [t for t, m in by_threshold.items() if m["false_people_rate"] <= options.max_false_rate]
    min_score = min(allowed) if allowed else float(THRESHOLDS[-1])
    report = {
        "fitted_on": f"training split rows held out by val_fraction {options.val_fraction}, seed {options.seed}",
        "val_fraction": options.val_fraction,
        "seed": options.seed,
        "precision": predictor.precision,  # the search's; people and joints are always scored in float32
        "search": predictor.search_name,  # whose candidates the person score is fitted on
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
    person: PersonDetector | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Calibration:
    """Fit a checkpoint's calibration (:func:`fit_calibration`) and write the checkpoint with it to ``out``.

    ``out`` is locked for the command before it is checked, so two runs writing it at once cannot both go ahead. The
    held-out rows are the checkpoint's training run's (:func:`cnnmrf.evaluation.holdout.resolve_holdout`); the
    report records them, the precision and where both came from.

    Args:
        person: the person detector whose boxes are verified (None: the scan's), as predict will search.
        on_note: called with a note to show before the work (held-out rows assumed, not recorded).

    Raises:
        CnnmrfError: ``out`` exists without ``force``, lies in the installed package or is being written by another
            command; a missing or foreign dataset, FLIC copy or checkpoint, or a dataset of another crop geometry
            than the checkpoint's; values of ``val_fraction`` or ``seed`` other than the checkpoint's without
            ``force``; less evidence than :data:`MINIMUMS`.
    """
    options = options or CalibrateOptions()
    check_outside_package(out)  # not even with --force: the bundled weights' calibration is fitted on 395 frames
    check_clutter(options)
    with output_file(out, force, "calibrate"):
        with open_dataset(data) as dataset:
            prep = dataset.config
            if "train" not in dataset.splits or dataset.num_rows("train") == 0:
                raise CnnmrfError(f"{data} has no training split to take validation rows from")
        source = FlicSource(flic)
        state = load_checkpoint(checkpoint)
        given = (options.val_fraction, options.seed)
        holdout, note = resolve_holdout(state.get("train_config"), *given, force, checkpoint)
        if note is not None and on_note is not None:
            on_note(note)
        precision = resolve_precision(options.precision, resolve_device(device), auto_bf16=False)  # as predict
        # an old calibration is replaced
        predictor = PosePredictor.from_checkpoint(
            checkpoint, device, Precision(precision.name), calibrated=False, person=person
        )
        check_geometry(predictor.preprocess, prep, checkpoint, data)
        options = replace(options, val_fraction=holdout.val_fraction, seed=holdout.seed)
        calibration = fit_calibration(predictor, data, source, options, on_progress)
        calibration.report.update(held_out_from=holdout.source, precision_reason=precision.reason)
        state[CALIBRATION_KEY] = calibration.to_dict()
        save_checkpoint(out, {k: v for k, v in state.items() if k != "format"})
    return calibration
