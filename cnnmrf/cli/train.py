"""`cnnmrf train-detector`, `train-mrf` and `train-joint`: the three training stages, one shared loop, drawn here."""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnmrf.cli.console import console, plain, progress_bar
from cnnmrf.cli.options import DataPath, DeviceOpt, Force, OutDir, PrecisionOpt, check_fraction
from cnnmrf.training.config import STAGE_DEFAULTS, Loss, Optimizer, Preset, Stage, TrainConfig

if TYPE_CHECKING:
    from cnnmrf.training.loop import TrainProgress


def check_finite(value: float) -> float:
    """Typer callback for a float option: a finite number (a ``min``/``max`` range lets inf through, and NaN too in
    click's own FloatRange)."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


# The settings every stage shares (epochs and lr come from STAGE_DEFAULTS): the class's field defaults, read without
# making a config (whose augmentations would load torch).
_D = TrainConfig
Epochs = Annotated[int, typer.Option(help="Passes over the training examples.", min=1)]
BatchSize = Annotated[int, typer.Option(help="Examples per step (per process under torchrun).", min=1)]
Lr = Annotated[float, typer.Option(help="Peak learning rate of the part detector.", min=0.0, callback=check_finite)]
SpatialLr = Annotated[
    float,
    typer.Option(help="Peak learning rate of the spatial model (log-space kernels).", min=0.0, callback=check_finite),
]
OptimizerOpt = Annotated[Optimizer, typer.Option("--optimizer", help="adam, or sgd with Nesterov momentum.")]
LossOpt = Annotated[Loss, typer.Option("--loss", help="ce (spatial-softmax cross-entropy) or mse (the paper's).")]
Seed = Annotated[
    int, typer.Option(help="Seed for initialisation, split, shuffling and augmentation.", min=0, max=2**32 - 1)
]
ValFraction = Annotated[
    float,
    typer.Option(
        help="Share of the training split held out for validation (never the test split).", callback=check_fraction
    ),
]
LoaderWorkers = Annotated[int, typer.Option("--workers", "-j", help="DataLoader worker processes.", min=0)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")]
MaxSteps = Annotated[int, typer.Option(help="Cut each epoch to this many steps (0: full epochs).", min=0)]
PresetOpt = Annotated[
    Preset,
    typer.Option(
        "--preset",
        help="Detector preset: small (2-core CPU), small-hr (stride-2 heatmaps), paper "
        "(the paper's widths, for a GPU) or tiny (tests).",
    ),
]
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
        callback=check_finite,
    ),
]


class TrainDisplay:
    """Draws a run's :class:`TrainProgress` reports: the arithmetic once, a bar per epoch, then its validation table
    (:meth:`validation`; other training stages override it).

    Use it as a context manager around :func:`train`, so the bar is stopped however the run ends.
    """

    def __init__(self) -> None:
        self._epoch: ExitStack | None = None  # holds the current epoch's bar
        self._update: Any = None
        self._started = False

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_epoch()

    def _end_epoch(self) -> None:
        if self._epoch is not None:
            self._epoch.close()
        self._epoch, self._update = None, None

    def __call__(self, report: TrainProgress) -> None:
        """Show one report."""
        if not self._started:
            console.print(f"precision {report.precision.name} ({report.precision.reason}) on {report.device}")
            self._started = True
        shown = self.validation(report)
        if shown is not None:
            self._end_epoch()
            console.print(shown)
            return
        if self._epoch is None:
            self._epoch = ExitStack()
            self._update = self._epoch.enter_context(
                progress_bar(f"epoch {report.epoch}/{report.epochs}", show_detail=True)
            )
        self._update(report.step, report.steps, f"loss {report.loss:.4f} {report.images_per_s:.1f} img/s")

    def validation(self, report: Any) -> Any | None:
        """What to print for a report that ends an epoch with its validation (None: a training step's report)."""
        if report.validation is None:
            return None
        from cnnmrf.evaluation.report import pck_table  # numpy: loaded when a run reports, not for --help

        title = f"epoch {report.epoch}: validation PCK ({report.num_validation} held-out)"
        return pck_table(report.validation, title=title)


def _run(
    ctx: typer.Context,
    stage: Stage,
    data: Path,
    out: Path,
    resume: bool,
    force: bool,
    detector: Path | None = None,
    mrf: Path | None = None,
    **options: Any,
) -> None:
    from cnnmrf.training.loop import is_main_process, train  # torch: loaded when a command runs, not for --help

    if resume:
        from cnnmrf.training.runs import recorded_options

        options = with_run_options(ctx, options, recorded_options(out))
    config = TrainConfig(stage=stage, **options)
    with TrainDisplay() as display:
        metrics = train(
            config, data, out, detector_ckpt=detector, mrf_ckpt=mrf, resume=resume, force=force, on_progress=display
        )
    if not is_main_process():  # another process of a torchrun: rank 0 alone validates and reports
        return
    pck = metrics["val_pck@0.2"]["mean"]
    scored = f"validation mean PCK@0.2 {pck:.1f} at the last epoch" if math.isfinite(pck) else "no validation examples"
    console.print(
        f"done: {plain(out / 'best.pt')} ({scored}), metrics in {plain(out / 'metrics.jsonl')}", soft_wrap=True
    )


def with_run_options(ctx: typer.Context, options: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """On --resume, the options not given on the command line take the values the run was started with
    (``recorded``), so that ``--resume`` alone continues a run as it was (those given must equal the run's, but the
    safe ones)."""
    given = {p.name for p in ctx.command.params if getattr(ctx.get_parameter_source(p.name), "name", "") != "DEFAULT"}
    cli_name = {"max_steps_per_epoch": "max_steps"}
    return {k: v if cli_name.get(k, k) in given or k not in recorded else recorded[k] for k, v in options.items()}


def train_detector(
    ctx: typer.Context,
    data: DataPath,
    out: OutDir = Path("runs/detector"),
    init: InitCkpt = None,
    preset: PresetOpt = _D.preset,
    epochs: Epochs = STAGE_DEFAULTS[Stage.detector].epochs,
    batch_size: BatchSize = _D.batch_size,
    lr: Lr = STAGE_DEFAULTS[Stage.detector].lr,
    optimizer: OptimizerOpt = _D.optimizer,
    loss: LossOpt = _D.loss,
    seed: Seed = _D.seed,
    val_fraction: ValFraction = _D.val_fraction,
    workers: LoaderWorkers = _D.workers,
    device: DeviceOpt = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train the part detector alone (paper section 3.1)."""
    _run(
        ctx,
        Stage.detector,
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
        val_fraction=val_fraction,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )


def train_mrf(
    ctx: typer.Context,
    data: DataPath,
    detector: DetectorCkpt = None,
    out: OutDir = Path("runs/mrf"),
    epochs: Epochs = STAGE_DEFAULTS[Stage.mrf].epochs,
    batch_size: BatchSize = _D.batch_size,
    spatial_lr: SpatialLr = _D.spatial_lr,
    optimizer: OptimizerOpt = _D.optimizer,
    loss: LossOpt = _D.loss,
    seed: Seed = _D.seed,
    val_fraction: ValFraction = _D.val_fraction,
    workers: LoaderWorkers = _D.workers,
    device: DeviceOpt = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train the spatial model (MRF) on the heatmaps of a frozen part detector (paper section 3.2)."""
    _run(
        ctx,
        Stage.mrf,
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
        val_fraction=val_fraction,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )


def train_joint(
    ctx: typer.Context,
    data: DataPath,
    detector: DetectorCkpt = None,
    mrf: MrfCkpt = None,
    out: OutDir = Path("runs/joint"),
    preset: PresetOpt = _D.preset,
    epochs: Epochs = STAGE_DEFAULTS[Stage.joint].epochs,
    batch_size: BatchSize = _D.batch_size,
    lr: Lr = STAGE_DEFAULTS[Stage.joint].lr,
    spatial_lr: SpatialLr = _D.spatial_lr,
    detector_loss_weight: DetectorLossWeight = _D.detector_loss_weight,
    optimizer: OptimizerOpt = _D.optimizer,
    loss: LossOpt = _D.loss,
    seed: Seed = _D.seed,
    val_fraction: ValFraction = _D.val_fraction,
    workers: LoaderWorkers = _D.workers,
    device: DeviceOpt = _D.device,
    precision: PrecisionOpt = _D.precision,
    max_steps: MaxSteps = 0,
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Train detector and spatial model together by back-propagation (from the two stages, or from scratch)."""
    _run(
        ctx,
        Stage.joint,
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
        val_fraction=val_fraction,
        workers=workers,
        device=device,
        precision=precision,
        max_steps_per_epoch=max_steps,
    )
