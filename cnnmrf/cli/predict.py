"""`cnnmrf predict`: find the joints of the person in photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.console import console, fail
from cnnmrf.cli.options import CheckpointOpt, Device, Force, PrecisionOpt
from cnnmrf.devices import Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.predict import (
    PosePrediction,
    PosePredictor,
    expand_inputs,
    output_stems,
    parse_box,
    predict_to_files,
)
from cnnmrf.joints import JOINT_NAMES


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
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    force: Force = False,
) -> None:
    """Predict the 10 upper-body joints of the (one) person in each image; write JSON and a drawn skeleton.

    Exits 1 if any image failed (each failure is one error line; the other images are still processed).
    """
    torso_box = parse_box(box) if box is not None else None
    predictor = PosePredictor.from_checkpoint(
        checkpoint or default_checkpoint(), device, precision, use_spatial=not no_mrf, flip_test=flip_test
    )
    paths, problems = expand_inputs(images, skip_dir=out)
    for problem in problems:
        fail(problem)
    failed, done = len(problems), 0
    for path, stem in zip(paths, output_stems(paths)):
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
        console.print(f"{done} image(s) done, {failed} failed; outputs in {out}")
    if failed:
        raise typer.Exit(1)


def _summary(prediction: PosePrediction, files: tuple[Path, Path]) -> str:
    """One line: the image, where its torso box came from, and the files written."""
    box = ",".join(f"{v:.0f}" for v in prediction.box)
    source = "given" if prediction.box_source == "given" else f"found by search, score {prediction.search_score:.2f}"
    return (
        f"[bold]{escape(prediction.file)}[/]: torso box {box} ({source}) -> {escape(str(files[0]))}, "
        f"{escape(str(files[1]))}"
    )


def _joint_table(prediction: PosePrediction) -> Table:
    """Rich table of one prediction's joints (x, y, score) in original-image pixels."""
    table = Table()
    for name in ("joint", "x", "y", "score"):
        table.add_column(name, justify="left" if name == "joint" else "right")
    for name, (x, y), score in zip(JOINT_NAMES, prediction.joints, prediction.scores):
        table.add_row(name, f"{x:.1f}", f"{y:.1f}", f"{score:.2f}")
    return table
