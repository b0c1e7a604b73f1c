"""`cnnmrf preprocess`: raw FLIC (folder or FLIC.zip) to the HDF5 dataset."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnnmrf.cli.console import console, plain, progress_bar
from cnnmrf.cli.options import Force, Workers
from cnnmrf.data.config import PreprocessConfig

_D = PreprocessConfig()


def preprocess(
    flic: Annotated[Path, typer.Argument(help="FLIC folder (examples.mat + images/) or FLIC.zip.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 file to write.")] = Path("data/flic.h5"),
    person_centric: Annotated[
        bool, typer.Option("--person-centric", help="Keep FLIC's raw left/right labels (default: observer-centric).")
    ] = False,
    input_size: Annotated[int, typer.Option(help="Side of the square model input, pixels.", min=16)] = _D.input_size,
    crop_scale: Annotated[float, typer.Option(help="Crop side / torso-box height.", min=0.5)] = _D.crop_scale,
    heatmap_stride: Annotated[int, typer.Option(help="Input pixels per heatmap pixel.", min=1)] = _D.heatmap_stride,
    sigma: Annotated[float, typer.Option(help="Target Gaussian sigma, heatmap pixels.", min=0.1)] = _D.heatmap_sigma,
    workers: Workers = 0,
    limit: Annotated[int | None, typer.Option(help="Keep only the first N examples (quick subsets).", min=1)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Drop missing or corrupt images, don't fail.")] = False,
    force: Force = False,
) -> None:
    """Convert raw FLIC into an HDF5 file of person-centred crops, joints and target heatmaps."""
    from cnnmrf.data.preprocess import preprocess_flic  # numpy, h5py and PIL: loaded when the command runs

    config = PreprocessConfig(
        input_size=input_size,
        crop_scale=crop_scale,
        heatmap_stride=heatmap_stride,
        heatmap_sigma=sigma,
        observer_centric=not person_centric,
    )
    command = "cnnmrf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with progress_bar("preprocess", show_rate=True) as on_progress:
        report = preprocess_flic(
            flic,
            out,
            config,
            workers=workers,
            limit=limit,
            skip_bad=skip_bad,
            force=force,
            command=command,
            on_progress=on_progress,
        )
    for file, reason in report.bad:
        console.print(f"[yellow]skipped[/] {plain(file)}: {plain(reason)}", soft_wrap=True)
    if report.non_finite:
        console.print(
            f"[yellow]{report.non_finite} joint label(s) are NaN or infinite in examples.mat[/]: stored as invisible"
        )
    counts = ", ".join(f"{n} {split}" for split, n in report.counts.items())
    console.print(
        f"wrote {plain(out)} ({counts} examples, {len(report.bad)} skipped) in {report.seconds:.1f} s", soft_wrap=True
    )
