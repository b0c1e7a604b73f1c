"""`cnnmrf predict`: find the joints of the person in photos; the command's inputs, `--box` and output files."""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.console import console, fail, plain
from cnnmrf.cli.options import CheckpointOpt, DeviceOpt, Force, PrecisionOpt
from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import output_folder
from cnnmrf.inference.photos import PosePrediction, PosePredictor, save_prediction
from cnnmrf.interrupts import check_interrupted
from cnnmrf.joints import JOINT_NAMES

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


def check_outputs_free(paths: Sequence[Path], force: bool) -> None:
    """Refuse to overwrite existing outputs without ``force``.

    Raises:
        CnnmrfError: one of ``paths`` exists and not ``force``.
    """
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CnnmrfError(f"{' and '.join(existing)} already exist(s); pass --force to overwrite")


def predict_to_files(
    predictor: PosePredictor, path: Path, box: np.ndarray | None, out: Path, stem: str, force: bool = False
) -> tuple[PosePrediction, tuple[Path, Path]]:
    """Predict one image file and write ``out/<stem>.json`` and ``out/<stem>_pose.png`` (skeleton, full resolution).

    Args:
        predictor: the loaded model.
        path: the image file.
        box: torso box in original pixels, or None to search for the person.
        out: output folder.
        stem: output name stem (see :func:`output_stems`).
        force: overwrite existing outputs.

    Returns:
        The prediction and the two files written.

    Raises:
        CnnmrfError: existing outputs without ``force``, or a bad image or box (see :meth:`PosePredictor.predict_file`).
    """
    files = output_paths(Path(out), stem)
    check_outputs_free(files, force)
    prediction, image = predictor.predict_file(path, box, full_resolution=True)
    save_prediction(prediction, image, *files)
    return prediction, files


def predict(
    images: Annotated[
        list[str], typer.Argument(help="Image files, folders (their images) or glob patterns.", show_default=False)
    ],
    checkpoint: CheckpointOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <name>.json and <name>_pose.png.")] = Path(
        "predictions"
    ),
    box: Annotated[
        str | None,
        typer.Option(
            help="The person's torso box x1,y1,x2,y2 in pixels (shoulders to hips), "
            "for every image; default: search for the person."
        ),
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document per image and line (JSON Lines) instead of the tables."),
    ] = False,
    no_mrf: Annotated[bool, typer.Option("--no-mrf", help="Detector alone even if the checkpoint has an MRF.")] = False,
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Average with the mirrored crop.")] = False,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    force: Force = False,
) -> None:
    """Predict the 10 upper-body joints of the (one) person in each image; write JSON and a drawn skeleton.

    Exits 1 if any image failed (each failure is one error line; the other images are still processed).
    """
    torso_box = parse_box(box) if box is not None else None
    predictor = PosePredictor.from_checkpoint(
        checkpoint or default_checkpoint(), device.value, precision, use_spatial=not no_mrf, flip_test=flip_test
    )
    paths, problems = expand_inputs(images, skip_dir=out)
    for problem in problems:
        fail(problem)
    failed, done = len(problems), 0
    with output_folder(out, "predict"):  # checked before any work, and held: two runs never mix their outputs
        for path, stem in zip(paths, output_stems(paths)):
            check_interrupted()
            try:
                prediction, files = predict_to_files(predictor, path, torso_box, out, stem, force)
            except CnnmrfError as err:
                fail(f"{path}: {err}")
                failed += 1
                continue
            done += 1
            if json_lines:
                console.print(json.dumps(prediction.to_dict()), soft_wrap=True, markup=False, emoji=False)
            else:
                console.print(_summary(prediction, files), soft_wrap=True)
                console.print(_joint_table(prediction))
        if not json_lines:
            console.print(f"{done} image(s) done, {failed} failed; outputs in {plain(out)}", soft_wrap=True)
        if failed:
            raise typer.Exit(1)


def _summary(prediction: PosePrediction, files: tuple[Path, Path]) -> str:
    """One line: the image, where its torso box came from, and the files written."""
    box = ",".join(f"{v:.0f}" for v in prediction.box)
    source = "given" if prediction.box_source == "given" else f"found by search, score {prediction.search_score:.2f}"
    return f"[bold]{plain(prediction.file)}[/]: torso box {box} ({source}) -> {plain(files[0])}, {plain(files[1])}"


def _joint_table(prediction: PosePrediction) -> Table:
    """Rich table of one prediction's joints (x, y, score) in original-image pixels."""
    table = Table()
    for name in ("joint", "x", "y", "score"):
        table.add_column(name, justify="left" if name == "joint" else "right")
    for name, (x, y), score in zip(JOINT_NAMES, prediction.joints, prediction.scores):
        table.add_row(name, f"{x:.1f}", f"{y:.1f}", f"{score:.2f}")
    return table
