"""`cnnmrf calibrate`: fit a checkpoint's person and joint score calibration on FLIC validation frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.console import console, plain, progress_bar
from cnnmrf.cli.options import (
    DEFAULT_SEARCH,
    CheckpointOpt,
    DataPath,
    DeviceOpt,
    HeldOutFraction,
    HeldOutSeed,
    PersonCheckpointOpt,
    SearchOpt,
    SearchPrecisionOpt,
    check_fraction,
    person_detector_for,
)
from cnnmrf.devices import Device, Precision
from cnnmrf.evaluation.holdout import HoldOut
from cnnmrf.evaluation.options import MINIMUMS, CalibrateOptions


def calibrate(
    data: DataPath,
    flic: Annotated[
        Path, typer.Option(help="The FLIC copy the dataset was made from (whole frames are read).", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the calibrated checkpoint (not inside the installed package).",
            show_default=False,
        ),
    ],
    checkpoint: CheckpointOpt = None,
    val_fraction: HeldOutFraction = None,
    seed: HeldOutSeed = None,
    max_frames: Annotated[
        int,
        typer.Option(
            help=f"Validation frames searched (0: all; fewer is faster, but at least {MINIMUMS.frames} holding "
            f"{MINIMUMS.people} annotated people are needed).",
            min=0,
        ),
    ] = 0,
    clutter: Annotated[
        int,
        typer.Option(
            help="Person-free photos added as negatives (half synthetic, half scikit-image's), and half as many others "
            f"to check the default --min-score on (at least {2 * MINIMUMS.check_photos}).",
            min=0,
        ),
    ] = 200,
    max_false_rate: Annotated[
        float,
        typer.Option(
            help="The default --min-score lets at most this share of person-free images get a person.",
            callback=check_fraction,
        ),
    ] = 0.05,
    device: DeviceOpt = Device.auto,
    precision: SearchPrecisionOpt = Precision.auto,
    search: SearchOpt = DEFAULT_SEARCH,
    person_checkpoint: PersonCheckpointOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite --out; allow other held-out rows than the checkpoint's.")
    ] = False,
) -> None:
    """Fit what turns the model's raw scores into probabilities (person score, joint scores, face-to-torso geometry,
    default --min-score) on the training split's held-out frames, and write the checkpoint with it to --out.

    Run it again whenever the weights change: `predict` reads the calibration from the checkpoint. The person score is
    fitted on the candidates of --search (calibrate with the search predict will use).
    """
    from cnnmrf.evaluation.calibrate import calibrate_checkpoint  # torch: loaded when it runs

    options = CalibrateOptions(
        val_fraction=val_fraction,
        seed=seed,
        max_frames=max_frames,
        clutter=clutter,
        max_false_rate=max_false_rate,
        precision=precision,
    )
    checkpoint = checkpoint or default_checkpoint()
    person = person_detector_for(search, person_checkpoint)
    with progress_bar("calibrate", transient=True) as on_progress:
        calibration = calibrate_checkpoint(
            data,
            flic,
            checkpoint,
            out,
            options,
            force,
            device.value,
            person,
            lambda stage, done, total: on_progress(done, total),
            lambda note: console.print(plain(note), soft_wrap=True),
        )
    report = calibration.report
    at = report["at_min_score"]
    ece = ", ".join(f"{name} {value:.3f}" for name, value in report["joint_score_ece"].items())
    held_out = plain(HoldOut(report["val_fraction"], report["seed"], report["held_out_from"]).describe())
    console.print(
        f"fitted on {report['frames']} validation frames ({report['candidates']} candidates, {report['positives']} "
        f"people, search {report['search']};"
        f" {report['faces_matched']} faces matched) and {report['joint_rows']} crops, held out by {held_out}; "
        f"precision {report['precision']}\n"
        f"default --min-score {calibration.min_score:.2f}: annotated people found {100 * at['people_found']:.1f}%, "
        f"held-out person-free photos with a false person {100 * at['false_people_rate']:.1f}%, "
        f"person-score ECE {at['person_score_ece']:.3f}; joint-score ECE {ece} (validation: in-sample)\n"
        f"wrote {plain(out)}",
        soft_wrap=True,
    )
