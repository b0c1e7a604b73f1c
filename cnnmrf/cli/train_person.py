"""`cnnmrf train-person`: train the person detector (torso-box centres in one pass) on whole FLIC frames."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnmrf.cli.console import console, plain
from cnnmrf.cli.options import DeviceOpt, Force, OutDir, PrecisionOpt, check_fraction
from cnnmrf.cli.train import (
    BatchSize,
    Epochs,
    LoaderWorkers,
    Lr,
    MaxSteps,
    Resume,
    Seed,
    TrainDisplay,
    ValFraction,
    with_run_options,
)
from cnnmrf.training.person_config import BEST_RECALL_AT, PersonPreset, PersonTrainConfig

if TYPE_CHECKING:
    from cnnmrf.training.person import PersonProgress

_D = PersonTrainConfig  # the class's field defaults, read without making a config
FlicDir = Annotated[
    Path, typer.Argument(help="The FLIC folder (examples.mat + images/) or FLIC.zip.", show_default=False)
]
PresetOpt = Annotated[PersonPreset, typer.Option("--preset", help="Model preset: small, or tiny (tests).")]
InputSize = Annotated[int, typer.Option(help="Side of the square training images (a multiple of 32).", min=32)]
ValLongSide = Annotated[
    int, typer.Option(help="Validation frames are seen whole, resized to this longer side.", min=32)
]
Tile = Annotated[
    float,
    typer.Option(
        help="Share of training images that are 2x2 or 3x3 grids of whole frames (small people).", min=0, max=1
    ),
]
Background = Annotated[
    float,
    typer.Option(
        help="Share of training images with a flat colour or a person-free photo around the frames, not black.",
        min=0,
        max=1,
    ),
]
FarWeight = Annotated[
    float,
    typer.Option(
        help="Weight of the no-person loss in FLIC frames over a torso height from every annotated person (FLIC "
        "leaves people unannotated there); padding and person-free photos count fully.",
        min=0.0,
        max=1.0,
    ),
]
NegativeShare = Annotated[
    float,
    typer.Option(help="Share of each epoch's images that are person-free photos.", callback=check_fraction),
]


class PersonDisplay(TrainDisplay):
    """Draws a person-detector run's reports as :class:`TrainDisplay` does, with the epoch's validation recall."""

    def validation(self, report: PersonProgress) -> str | None:
        """One line of validation recall at the end of an epoch (None: a training step's report)."""
        if report.recall is None:
            return None
        scores = ", ".join(f"recall{k} {v:.1f}" for k, v in report.recall.items())
        return f"epoch {report.epoch}: validation ({report.num_validation} people) {scores}"


def train_person(
    ctx: typer.Context,
    flic: FlicDir,
    out: OutDir = Path("runs/person"),
    preset: PresetOpt = _D.preset,
    epochs: Epochs = _D.epochs,
    batch_size: BatchSize = _D.batch_size,
    lr: Lr = _D.lr,
    input_size: InputSize = _D.input_size,
    val_long_side: ValLongSide = _D.val_long_side,
    tile: Tile = _D.tile,
    background: Background = _D.background,
    far_weight: FarWeight = _D.far_weight,
    negative_share: NegativeShare = _D.negative_share,
    seed: Seed = _D.seed,
    val_fraction: ValFraction = _D.val_fraction,
    workers: LoaderWorkers = _D.workers,
    device: DeviceOpt = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train the person detector: torso-box centres, heights and offsets in one pass over a whole photo."""
    from cnnmrf.training.person import train_person as run  # torch: loaded when the command runs, not for --help

    options: dict[str, Any] = {
        "preset": preset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "input_size": input_size,
        "val_long_side": val_long_side,
        "tile": tile,
        "background": background,
        "far_weight": far_weight,
        "negative_share": negative_share,
        "seed": seed,
        "val_fraction": val_fraction,
        "workers": workers,
        "device": device,
        "precision": precision,
        "max_steps_per_epoch": max_steps,
    }
    if resume:
        options = with_run_options(ctx, options, _recorded_options(out))
    with PersonDisplay() as display:
        metrics = run(PersonTrainConfig(**options), flic, out, resume=resume, force=force, on_progress=display)
    score = metrics["best_recall"]
    scored = f"validation recall@{BEST_RECALL_AT} {score:.1f}" if score >= 0 else "no validation frames"
    console.print(
        f"done: {plain(out / 'best.pt')} (epoch {metrics['best_epoch']}, {scored}), metrics in "
        f"{plain(out / 'metrics.jsonl')}",
        soft_wrap=True,
    )


def _recorded_options(out: Path) -> dict[str, Any]:
    """The options a person-detector run in ``out`` was started with (empty without ``out/last.pt``)."""
    from cnnmrf.models.person import load_person_checkpoint

    last = out / "last.pt"
    return dict(load_person_checkpoint(last).get("train_config") or {}) if last.is_file() else {}
