"""`cnnmrf predict`: find the people in photos and videos and their joints; `--box`, the per-file loop and what it
prints (the inputs and output names: :mod:`cnnmrf.cli.predict_files`; videos: :mod:`cnnmrf.cli.predict_video`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnmrf.bundled import BUNDLED_MIN_SCORE, default_checkpoint
from cnnmrf.cli.console import console, debug_mode, err_console, fail, plain, progress_bar
from cnnmrf.cli.options import (
    DEFAULT_SEARCH,
    CheckpointOpt,
    DeviceOpt,
    PersonCheckpointOpt,
    SearchOpt,
    SearchPrecisionOpt,
    person_detector_for,
)
from cnnmrf.cli.predict_files import expand_inputs, is_video, output_stems, predict_to_files
from cnnmrf.cli.predict_video import (
    DETECT_EVERY,
    SMOOTH_BETA,
    SMOOTH_CUTOFF,
    DetectEveryOpt,
    EndOpt,
    EveryOpt,
    SmoothBetaOpt,
    SmoothCutoffOpt,
    SmoothOpt,
    StartOpt,
    predict_video_file,
    video_options,
)
from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import output_folder
from cnnmrf.interrupts import check_interrupted
from cnnmrf.joints import JOINT_NAMES

if TYPE_CHECKING:  # for annotations only: numpy and torch are imported when the command runs
    import numpy as np
    from rich.table import Table

    from cnnmrf.inference.outputs import ImagePrediction, Person

SOURCE_LABELS = {
    "given": "given box",
    "scan": "found by the scan",
    "face": "found from a face",
    "detector": "found by the person detector",
    "track": "followed from the previous frame",
}


def parse_box(text: str) -> np.ndarray:
    """Parse ``x1,y1,x2,y2`` (original-image pixels) into a (4,) float array.

    Raises:
        CnnmrfError: not four numbers, or not ``x1 < x2`` and ``y1 < y2``.
    """
    import numpy as np

    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise CnnmrfError(f"--box must be four numbers x1,y1,x2,y2 (the torso box, in pixels), not {text!r}")
    if not (box[0] < box[2] and box[1] < box[3]):
        raise CnnmrfError(f"--box {text} must have x1 < x2 and y1 < y2")
    return box


def predict(
    images: Annotated[
        list[str],
        typer.Argument(
            help="Image or video files, folders (their images and videos) or glob patterns.", show_default=False
        ),
    ],
    checkpoint: CheckpointOpt = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for <name>.json and <name>_pose.png, or a video's <name>.jsonl and <name>_pose.mp4 (a new "
            "run replaces the ones predict wrote before).",
        ),
    ] = Path("predictions"),
    box: Annotated[
        str | None,
        typer.Option(
            help="One person's torso box x1,y1,x2,y2 in pixels (shoulders to hips), for every image (a video: in its "
            "first frame, then followed); default: search for people."
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Report searched people whose calibrated person score (a probability) is at least this; "
            f"default: the checkpoint's, chosen on validation frames ({BUNDLED_MIN_SCORE:g} for the bundled weights). "
            "Needs a calibrated checkpoint (`cnnmrf calibrate`).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    max_people: Annotated[
        int | None, typer.Option(help="At most this many people per image, likeliest first; default: all.", min=1)
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document per image and line (JSON Lines) instead of the tables."),
    ] = False,
    no_mrf: Annotated[
        bool, typer.Option("--no-mrf", help="Report the detector's joints even if the checkpoint has an MRF.")
    ] = False,
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Average with the mirrored crop.")] = False,
    device: DeviceOpt = Device.auto,
    precision: SearchPrecisionOpt = Precision.auto,
    search: SearchOpt = DEFAULT_SEARCH,
    person_checkpoint: PersonCheckpointOpt = None,
    every: EveryOpt = 1,
    start: StartOpt = 0.0,
    end: EndOpt = None,
    smooth: SmoothOpt = True,
    smooth_cutoff: SmoothCutoffOpt = SMOOTH_CUTOFF,
    smooth_beta: SmoothBetaOpt = SMOOTH_BETA,
    detect_every: DetectEveryOpt = DETECT_EVERY,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace files at the output names that predict did not write (without it, such an image fails).",
        ),
    ] = False,
) -> None:
    """Find the people in each image or video frame and their 10 upper-body joints; write JSON and the drawn skeletons.

    Each image gives OUT/<name>.json (docs/prediction-format.md) and OUT/<name>_pose.png; each video (mp4, mov, mkv,
    avi, webm...: told by content) OUT/<name>.jsonl, one document per predicted frame with each person's track id, and
    OUT/<name>_pose.mp4 (H.264). Running the command again replaces them, but never a file predict did not write
    (without --force). Inputs with the same name get <name>-2, <name>-3... A photo or frame with nobody in it is an
    answer ("people": []), not a failure. Exits 1 if any file failed (each failure is one error line; the other files
    are still processed).
    """
    from cnnmrf.inference.photos import PosePredictor  # torch: loaded when the command runs

    torso_box = parse_box(box) if box is not None else None
    options = video_options(start, end, every, smooth, smooth_cutoff, smooth_beta, detect_every)
    person = person_detector_for(search, person_checkpoint)
    checkpoint = checkpoint or default_checkpoint()
    predictor = PosePredictor.from_checkpoint(
        checkpoint,
        device.value,
        precision,
        person=person,
        use_spatial=not no_mrf,
        flip_test=flip_test,
        min_score=min_score,
        max_people=max_people,
    )
    if predictor.calibration is None and min_score is not None:
        raise CnnmrfError(
            f"--min-score needs a calibrated checkpoint: {checkpoint} has no person scores (run `cnnmrf calibrate` "
            "on it; uncalibrated, predict reports the best candidate per image)"
        )
    if predictor.calibration is None and torso_box is None:
        (err_console if json_lines else console).print(  # --json: stdout holds only the documents
            "note: this checkpoint is not calibrated (`cnnmrf calibrate`): scores are null and only the best "
            "candidate per image is reported",
            soft_wrap=True,
        )
    paths, problems = expand_inputs(images, skip_dir=out)
    for problem in problems:
        fail(problem)
    videos = {path for path in paths if is_video(path)}
    failed, done, people = len(problems), 0, 0
    many = len(paths) > 1 and not json_lines
    bar = many and not videos  # a video shows a bar of its own frames
    # The folder is checked before any work, and held: two runs never mix their outputs; a failed run that created it
    # removes it again if it stayed empty (hence the exit inside the block).
    with output_folder(out, "predict"):
        stems = output_stems(paths, out, videos)  # looks at what the folder holds: while it is held
        with progress_bar("predict", transient=True, show_rate=True) as on_progress:
            for count, (path, stem) in enumerate(zip(paths, stems)):
                check_interrupted()
                try:
                    if path in videos:
                        predict_video_file(predictor, path, torso_box, out, stem, force, options, json_lines)
                    else:
                        prediction, files = predict_to_files(predictor, path, torso_box, out, stem, force)
                except CnnmrfError as err:
                    fail(f"{path}: {err}")
                    failed += 1
                    continue
                except Exception as err:  # a bug or a resource limit in one image never ends the batch
                    if debug_mode["on"]:
                        raise
                    fail(f"{path}: {unexpected(err)}")
                    failed += 1
                    continue
                finally:
                    if bar:
                        on_progress(count + 1, len(paths))
                done += 1
                if path in videos:
                    continue
                people += len(prediction.people)
                if json_lines:
                    console.print(json.dumps(prediction.to_dict()), soft_wrap=True, markup=False, emoji=False)
                else:
                    console.print(_summary(prediction, files), soft_wrap=True)
                    if not many:
                        for number, person in enumerate(prediction.people, 1):
                            console.print(_joint_table(person, number))
        if not json_lines:
            # a run that wrote nothing leaves no folder it created behind (see above)
            where = f"outputs in {plain(out)}" if done else "nothing written"
            found = f"{people} {'person' if people == 1 else 'people'} found in {done}"
            kind, found = (f"file(s) ({len(videos)} video(s))", f"{done} predicted") if videos else ("image(s)", found)
            console.print(
                f"{done + failed} {kind}: {found}, {failed} failed; {where} (precision {predictor.precision}, "
                f"search {predictor.search_name})",
                soft_wrap=True,
            )
        if failed:
            raise typer.Exit(1)


def unexpected(err: Exception) -> str:
    """One line for an unexpected error in one image: what it was, and how to see more."""
    if isinstance(err, MemoryError):
        return "out of memory (--debug shows where)"
    lines = str(err).strip().splitlines()
    return f"failed unexpectedly: {type(err).__name__}{': ' + lines[0] if lines else ''} (--debug shows the traceback)"


def _summary(prediction: ImagePrediction, files: tuple[Path, Path]) -> str:
    """One line: the image, the people found (score, where their torso box came from) and the files written."""
    if not prediction.people:
        found = "no person found"
    else:
        found = ", ".join(
            f"{'person' if len(prediction.people) == 1 else f'#{n}'} "
            f"{'' if p.score is None else f'score {p.score:.2f} '}"
            f"({SOURCE_LABELS[p.source]}, torso box {','.join(f'{v:.0f}' for v in p.box)})"
            for n, p in enumerate(prediction.people, 1)
        )
    return f"[bold]{plain(prediction.file)}[/]: {found} -> {plain(files[0])}, {plain(files[1])}"


def _joint_table(person: Person, number: int) -> Table:
    """Rich table of one person's joints (x, y, calibrated score) in original-image pixels."""
    from rich.table import Table

    table = Table(title=f"person {number}", title_justify="left")
    for name in ("joint", "x", "y", "score"):
        table.add_column(name, justify="left" if name == "joint" else "right")
    scores = person.joint_scores if person.joint_scores is not None else [None] * len(JOINT_NAMES)
    for name, (x, y), score in zip(JOINT_NAMES, person.joints, scores):
        table.add_row(name, f"{x:.1f}", f"{y:.1f}", "-" if score is None else f"{score:.2f}")
    return table
