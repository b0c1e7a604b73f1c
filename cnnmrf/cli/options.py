"""Options shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # torch: loaded when a command runs
    from cnnmrf.models.person import PersonDetector

DataPath = Annotated[Path, typer.Argument(help="HDF5 dataset made by `cnnmrf preprocess`.", show_default=False)]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints and metrics.jsonl.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes (0: all cores).", min=0)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run. auto: CUDA when available, else the CPU.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="The detector's arithmetic. auto: bf16 where the device computes it natively "
        "(CPU with AMX or AVX512-BF16, CUDA GPU with bf16), else fp32.",
    ),
]
SearchPrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="The person scan's arithmetic; people are always predicted and scored in fp32. auto: fp32, so the "
        "answers are the same on every machine. bf16: a faster scan where the CPU has bf16 units, which may propose "
        "other doubtful candidates (docs/performance.md).",
    ),
]


class SearchMethod(str, Enum):
    """How `predict` proposes torso boxes where people may be (each proposal is then verified by the pose model)."""

    scan = "scan"  # the part detector's multi-scale scan and faces (PersonSearch)
    detector = (
        "detector"  # the learned person detector at 320 px, and at 640 px for small people (PersonDetectorSearch)
    )


# The bundled weights' person score is calibrated on the person detector's candidates (`calibrate --search detector`)
DEFAULT_SEARCH = SearchMethod.detector
SearchOpt = Annotated[
    SearchMethod,
    typer.Option(
        "--search",
        help="How people are proposed. detector: the person detector (`cnnmrf train-person`; default: the bundled "
        "one) over the whole photo, again finer where people may be small. scan: the pose model's part detector "
        "scanned at six scales, and faces (slower; calibrate with the search you predict with).",
    ),
]
PersonCheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--person-checkpoint",
        help="Person detector checkpoint from `cnnmrf train-person` for --search detector; default: the bundled one.",
    ),
]


def person_detector_for(search: SearchMethod, checkpoint: Path | None) -> PersonDetector | None:
    """The person detector that ``--search`` asks for (``checkpoint``, else the bundled one), None for the scan.

    Raises:
        CnnmrfError: a person checkpoint with the scan, or one that is missing or not a person detector's.
    """
    from cnnmrf.bundled import default_person_checkpoint
    from cnnmrf.models.person import load_person_checkpoint, person_detector_from

    if search is not SearchMethod.detector:
        if checkpoint is not None:
            raise CnnmrfError("--person-checkpoint is for --search detector (the scan uses no person detector)")
        return None
    checkpoint = checkpoint or default_person_checkpoint()
    return person_detector_from(load_person_checkpoint(checkpoint), str(checkpoint))


CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="Checkpoint (.pt); default: the bundled FLIC-trained weights."),
]


def check_fraction(value: float | None) -> float | None:
    """Typer callback for a share such as ``--val-fraction``: at least 0 and below 1 (NaN is refused too)."""
    if value is not None and not 0.0 <= value < 1.0:
        raise typer.BadParameter(f"must be at least 0 and below 1, not {value}")
    return value


# Every command takes it after its name too (added by cnnmrf.cli.console.guarded), as well as before it.
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show full tracebacks on errors (before or after the command name).")
]


# Which validation rows (evaluate --split val, calibrate): the training run's, as its checkpoint records them.
HeldOutFraction = Annotated[
    float | None,
    typer.Option(
        help="The training run's held-out share (its --val-fraction). Default: the checkpoint's (0.1 if it records "
        "none); another value needs --force.",
        callback=check_fraction,
        show_default=False,
    ),
]
HeldOutSeed = Annotated[
    int | None,
    typer.Option(
        help="The training run's --seed (which drew the held-out rows). Default: the checkpoint's (0 if it records "
        "none); another value needs --force.",
        min=0,
        show_default=False,
    ),
]
