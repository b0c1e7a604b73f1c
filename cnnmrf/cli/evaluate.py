"""`cnnmrf evaluate`: FLIC PCK on the test split (or on the held-out validation rows, for tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.console import console, plain, progress_bar
from cnnmrf.cli.options import CheckpointOpt, DataPath, DeviceOpt, HeldOutFraction, HeldOutSeed, PrecisionOpt
from cnnmrf.data.decoding import Decoding
from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.options import EvaluateOptions, Split


def parse_scales(text: str) -> tuple[float, ...]:
    """Parse a ``--scales`` list such as ``"1.0,0.8,1.2"``.

    Raises:
        CnnmrfError: not a comma-separated list of numbers in [0.25, 4].
    """
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CnnmrfError(f"--scales must be comma-separated numbers such as 1.0,0.8,1.2, not {text!r}") from None
    if not scales or not all(0.25 <= s <= 4.0 for s in scales):
        raise CnnmrfError(f"--scales must be numbers between 0.25 and 4 such as 1.0,0.8,1.2, not {text!r}")
    return scales


def evaluate(
    data: DataPath,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for metrics.json, predictions.json and pck.png.", show_default=False),
    ],
    checkpoint: CheckpointOpt = None,
    no_mrf: Annotated[bool, typer.Option("--no-mrf", help="Detector alone even if the checkpoint has an MRF.")] = False,
    flip_test: Annotated[bool, typer.Option("--flip-test", help="Average with the mirrored crop.")] = False,
    scales: Annotated[
        str,
        typer.Option(
            help="Multi-scale testing zooms about the crop centre, e.g. 1.0,0.8,1.2; score maps are averaged."
        ),
    ] = "1.0",
    decoding: Annotated[
        Decoding,
        typer.Option(help="Peak decoding: dark (smoothed softmax + 2-D Newton step), parabola (per axis) or argmax."),
    ] = Decoding.dark,
    batch_size: Annotated[int, typer.Option(help="Crops per forward pass.", min=1)] = 32,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    split: Annotated[
        Split, typer.Option(help="test: FLIC's test split. val: the training split's held-out rows (tune on these).")
    ] = Split.test,
    val_fraction: HeldOutFraction = None,
    seed: HeldOutSeed = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples (quick looks).", min=1)] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing outputs; with --split val, allow other held-out rows.")
    ] = False,
) -> None:
    """Score a checkpoint on FLIC's test split (or --split val): PCK at r = 0.05..0.2 and the 0.01..0.5 curve."""
    from cnnmrf.evaluation.evaluate import LABELS, evaluate_checkpoint  # numpy and torch: loaded when the command runs
    from cnnmrf.evaluation.report import pck_table

    options = EvaluateOptions(
        use_spatial=not no_mrf,
        flip_test=flip_test,
        scales=parse_scales(scales),
        decoding=decoding,
        batch_size=batch_size,
        device=device.value,
        precision=precision,
        split=split,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        force=force,
    )
    checkpoint = checkpoint or default_checkpoint()
    with progress_bar("evaluate", transient=True) as on_progress:
        evaluation = evaluate_checkpoint(
            data,
            checkpoint,
            out,
            options,
            on_progress=on_progress,
            on_note=lambda note: console.print(plain(note), soft_wrap=True),
        )
    convention = "observer-centric" if evaluation.observer_centric else "person-centric"
    held_out = "" if evaluation.holdout is None else f", held out by {plain(evaluation.holdout.describe())}"
    console.print(
        f"checkpoint {plain(checkpoint)}; {evaluation.num_examples} {split.value} examples of {plain(data)}{held_out}; "
        f"ground truth {convention} (as stored in the dataset); precision {evaluation.precision}"
    )
    for name, result in evaluation.results.items():
        console.print(pck_table(result, title=f"{split.value} PCK (%), {LABELS[name]}"))
    files = ", ".join(plain(f) for f in evaluation.files)
    console.print(
        f"mean PCK@0.2 {100 * evaluation.result.at('mean', 0.2):.1f}% ({LABELS[evaluation.headline]}); "
        f"wrote {files} in {evaluation.seconds:.1f} s "
        f"({evaluation.num_examples / evaluation.seconds:.1f} crops/s, {evaluation.precision})"
    )
