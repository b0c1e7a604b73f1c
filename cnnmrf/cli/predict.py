"""`cnnmrf predict`: find the people in photos and their joints; the command's inputs, `--box` and output files."""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.console import console, err_console, fail, plain, progress_bar
from cnnmrf.cli.options import CheckpointOpt, DeviceOpt, PrecisionOpt
from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import output_folder
from cnnmrf.interrupts import check_interrupted
from cnnmrf.joints import JOINT_NAMES

if TYPE_CHECKING:  # for annotations only: numpy and torch are imported when the command runs
    import numpy as np
    from rich.table import Table

    from cnnmrf.inference.outputs import ImagePrediction, Person
    from cnnmrf.inference.photos import PosePredictor

SOURCE_LABELS = {"given": "given box", "scan": "found by the scan", "face": "found from a face"}

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_inputs(args: Sequence[str], skip_dir: Path | None = None) -> tuple[list[Path], list[str]]:
    """Turn IMAGE arguments (files, folders, glob patterns) into image paths.

    Files are kept as given (even if missing or not images: they fail later, one by one); a folder gives its images
    (by suffix, sorted, not recursive), skipping earlier ``*_pose.png`` outputs when it is ``skip_dir``; a pattern the
    shell did not expand is expanded here (sorted). Duplicates are dropped, order is kept.

    Returns:
        The paths and one message per argument that yielded nothing (an empty folder, a pattern matching nothing).
    """
    paths: list[Path] = []
    problems: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if skip_dir is not None and path.resolve() == Path(skip_dir).resolve():
                found = [p for p in found if not p.name.endswith("_pose.png")]
            if not found:
                problems.append(f"{arg}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths.extend(found)
        elif not path.exists() and glob.has_magic(arg):
            found = sorted(Path(p) for p in glob.glob(arg) if Path(p).is_file())
            if not found:
                problems.append(f"{arg}: no file matches this pattern")
            paths.extend(found)
        else:
            paths.append(path)
    unique = list(dict.fromkeys(paths))
    return unique, problems


def output_stems(paths: Sequence[Path]) -> list[str]:
    """Output name stems, one per path: the file stem, with ``-2``, ``-3``... appended when stems repeat."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


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


def output_paths(out: Path, stem: str) -> tuple[Path, Path]:
    """``out/<stem>.json`` and ``out/<stem>_pose.png``."""
    return out / f"{stem}.json", out / f"{stem}_pose.png"


def predict_to_files(
    predictor: PosePredictor, path: Path, box: np.ndarray | None, out: Path, stem: str
) -> tuple[ImagePrediction, tuple[Path, Path]]:
    """Predict one image file and write ``out/<stem>.json`` and ``out/<stem>_pose.png`` (skeletons, full resolution),
    replacing earlier ones (predictions are derived outputs).

    Args:
        predictor: the loaded model.
        path: the image file.
        box: torso box in original pixels, or None to search for people.
        out: output folder.
        stem: output name stem (see :func:`output_stems`).

    Returns:
        The prediction and the two files written.

    Raises:
        CnnmrfError: a bad image or box (see :meth:`PosePredictor.predict_file`), or outputs that cannot be written.
    """
    from cnnmrf.inference.outputs import save_prediction

    files = output_paths(Path(out), stem)
    prediction, image = predictor.predict_file(path, box, full_resolution=True)
    save_prediction(prediction, image, *files)
    return prediction, files


def predict(
    images: Annotated[
        list[str], typer.Argument(help="Image files, folders (their images) or glob patterns.", show_default=False)
    ],
    checkpoint: CheckpointOpt = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for <name>.json and <name>_pose.png (a new run replaces an image's earlier ones).",
        ),
    ] = Path("predictions"),
    box: Annotated[
        str | None,
        typer.Option(
            help="One person's torso box x1,y1,x2,y2 in pixels (shoulders to hips), for every image; "
            "default: search for people."
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Report searched people whose calibrated person score (a probability) is at least this; "
            "default: the checkpoint's, chosen on validation frames (0.5 where it has none).",
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
    precision: PrecisionOpt = Precision.auto,
) -> None:
    """Find the people in each image and their 10 upper-body joints; write JSON and the drawn skeletons.

    Each image gives OUT/<name>.json (docs/prediction-format.md) and OUT/<name>_pose.png; running the command again
    replaces them. An image with nobody in it is an answer ("people": []), not a failure. Exits 1 if any image failed
    (each failure is one error line; the other images are still processed).
    """
    from cnnmrf.inference.photos import PosePredictor  # torch: loaded when the command runs

    torso_box = parse_box(box) if box is not None else None
    predictor = PosePredictor.from_checkpoint(
        checkpoint or default_checkpoint(),
        device.value,
        precision,
        use_spatial=not no_mrf,
        flip_test=flip_test,
        min_score=min_score,
        max_people=max_people,
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
    failed, done, people = len(problems), 0, 0
    many = len(paths) > 1 and not json_lines
    # The folder is checked before any work, and held: two runs never mix their outputs; a failed run that created it
    # removes it again if it stayed empty (hence the exit inside the block).
    with output_folder(out, "predict"):
        with progress_bar("predict", transient=True, show_rate=True) as on_progress:
            for count, (path, stem) in enumerate(zip(paths, output_stems(paths))):
                check_interrupted()
                try:
                    prediction, files = predict_to_files(predictor, path, torso_box, out, stem)
                except CnnmrfError as err:
                    fail(f"{path}: {err}")
                    failed += 1
                    continue
                finally:
                    if many:
                        on_progress(count + 1, len(paths))
                done += 1
                people += len(prediction.people)
                if json_lines:
                    console.print(json.dumps(prediction.to_dict()), soft_wrap=True, markup=False, emoji=False)
                else:
                    console.print(_summary(prediction, files), soft_wrap=True)
                    if not many:
                        for number, person in enumerate(prediction.people, 1):
                            console.print(_joint_table(person, number))
        if not json_lines:
            console.print(
                f"{done + failed} image(s): {people} {'person' if people == 1 else 'people'} found in {done}, "
                f"{failed} failed; outputs in {plain(out)}",
                soft_wrap=True,
            )
        if failed:
            raise typer.Exit(1)


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
