"""`cnnmrf train-detector`, `train-mrf` and `train-joint`: the three training stages, one shared loop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from cnnmrf.cli.console import console
from cnnmrf.cli.options import DataPath, Device, Force, OutDir, PrecisionOpt
from cnnmrf.training.config import TrainConfig
from cnnmrf.training.loop import train

_D = TrainConfig()
Epochs = Annotated[int, typer.Option(help="Passes over the training examples.", min=1)]
BatchSize = Annotated[int, typer.Option(help="Examples per step (per process under torchrun).", min=1)]
Lr = Annotated[float, typer.Option(help="Peak learning rate of the part detector.", min=0.0)]
SpatialLr = Annotated[float, typer.Option(help="Peak learning rate of the spatial model (log-space kernels).", min=0.0)]
Optimizer = Annotated[str, typer.Option(help="adam or sgd.")]
Loss = Annotated[str, typer.Option(help="ce (spatial-softmax cross-entropy) or mse (the paper's).")]
Seed = Annotated[int, typer.Option(help="Seed for initialisation, split, shuffling and augmentation.")]
LoaderWorkers = Annotated[int, typer.Option("--workers", "-j", help="DataLoader worker processes.", min=0)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")]
MaxSteps = Annotated[int, typer.Option(help="Cut each epoch to this many steps (0: full epochs).", min=0)]
Preset = Annotated[str, typer.Option(help="Detector preset: small, paper or tiny.")]
DetectorCkpt = Annotated[Path | None, typer.Option("--detector", help="Checkpoint from train-detector.")]
InitCkpt = Annotated[
    Path | None,
    typer.Option(
        "--init",
        help="Start from the detector weights of this checkpoint "
        "(fine-tuning, e.g. the bundled weights on your own data); --preset is "
        "then taken from it.",
    ),
]
MrfCkpt = Annotated[Path | None, typer.Option("--mrf", help="Checkpoint from train-mrf (detector + spatial model).")]
DetectorLossWeight = Annotated[
    float,
    typer.Option(
        help="Weight of the detector's own heatmap loss next to the spatial "
        "model's (0: only the final output is supervised).",
        min=0.0,
    ),
]


def _run(
    stage: str,
    data: Path,
    out: Path,
    resume: bool,
    force: bool,
    detector: Path | None = None,
    mrf: Path | None = None,
    **options: object,
) -> None:
    config = replace(TrainConfig(), stage=stage, **options)
    metrics = train(
        config, data, out, detector_ckpt=detector, mrf_ckpt=mrf, resume=resume, force=force, console=console
    )
    if metrics:
        console.print(
            f"done: {out}/best.pt (validation mean PCK@0.2 {metrics['val_pck@0.2']['mean']:.1f} at the "
            f"last epoch), metrics in {out}/metrics.jsonl"
        )


def train_detector(
    data: DataPath,
    out: OutDir = Path("runs/detector"),
    init: InitCkpt = None,
    preset: Preset = _D.preset,
    epochs: Epochs = _D.epochs,
    batch_size: BatchSize = _D.batch_size,
    lr: Lr = _D.lr,
    optimizer: Optimizer = _D.optimizer,
    loss: Loss = _D.loss,
    seed: Seed = _D.seed,
    workers: LoaderWorkers = _D.workers,
    device: Device = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train the part detector alone (paper section 3.1)."""
    _run(
        "detector",
        data,
        out,
        resume,
        force,
        detector=init,
        preset=preset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        loss=loss,
        seed=seed,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )


def train_mrf(
    data: DataPath,
    detector: DetectorCkpt = None,
    out: OutDir = Path("runs/mrf"),
    epochs: Epochs = 3,
    batch_size: BatchSize = _D.batch_size,
    spatial_lr: SpatialLr = _D.spatial_lr,
    optimizer: Optimizer = _D.optimizer,
    loss: Loss = _D.loss,
    seed: Seed = _D.seed,
    workers: LoaderWorkers = _D.workers,
    device: Device = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train the spatial model (MRF) on the heatmaps of a frozen part detector (paper section 3.2)."""
    _run(
        "mrf",
        data,
        out,
        resume,
        force,
        detector=detector,
        epochs=epochs,
        batch_size=batch_size,
        spatial_lr=spatial_lr,
        optimizer=optimizer,
        loss=loss,
        seed=seed,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )


def train_joint(
    data: DataPath,
    detector: DetectorCkpt = None,
    mrf: MrfCkpt = None,
    out: OutDir = Path("runs/joint"),
    preset: Preset = _D.preset,
    epochs: Epochs = 10,
    batch_size: BatchSize = _D.batch_size,
    lr: Lr = 5e-4,  # fine-tuning: lower than train-detector's
    spatial_lr: SpatialLr = _D.spatial_lr,
    detector_loss_weight: DetectorLossWeight = _D.detector_loss_weight,
    optimizer: Optimizer = _D.optimizer,
    loss: Loss = _D.loss,
    seed: Seed = _D.seed,
    workers: LoaderWorkers = _D.workers,
    device: Device = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train detector and spatial model together by back-propagation (from the two stages, or from scratch)."""
    _run(
        "joint",
        data,
        out,
        resume,
        force,
        detector=detector,
        mrf=mrf,
        preset=preset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        spatial_lr=spatial_lr,
        detector_loss_weight=detector_loss_weight,
        optimizer=optimizer,
        loss=loss,
        seed=seed,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )
