"""`cnnmrf train-person`: train the person detector (torso-box centres in one pass) on whole FLIC frames."""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnmrf.cli.console import console, plain, progress_bar
from cnnmrf.cli.options import DeviceOpt, Force, OutDir, PrecisionOpt, check_fraction
from cnnmrf.cli.train import BatchSize, Epochs, LoaderWorkers, Lr, MaxSteps, Resume, Seed, ValFraction
from cnnmrf.training.person_config import RECALL_AT, PersonPreset, PersonTrainConfig

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


class PersonDisplay:
    """Draws a run's reports: the arithmetic once, a bar per epoch, then the epoch's validation recall."""

    def __init__(self) -> None:
        self._epoch: ExitStack | None = None
        self._update: Any = None
        self._started = False

    def __enter__(self) -> PersonDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_epoch()

    def _end_epoch(self) -> None:
        if self._epoch is not None:
            self._epoch.close()
        self._epoch, self._update = None, None

    def __call__(self, report: PersonProgress) -> None:
        """Show one report."""
        if not self._started:
            console.print(f"precision {report.precision.name} ({report.precision.reason}) on {report.device}")
            self._started = True
        if report.recall is not None:
            self._end_epoch()
            scores = ", ".join(f"recall{k} {v:.1f}" for k, v in report.recall.items())
            console.print(f"epoch {report.epoch}: validation ({report.num_validation} people) {scores}")
            return
        if self._epoch is None:
            self._epoch = ExitStack()
            self._update = self._epoch.enter_context(
                progress_bar(f"epoch {report.epoch}/{report.epochs}", show_detail=True)
            )
        self._update(report.step, report.steps, f"loss {report.loss:.4f} {report.images_per_s:.1f} img/s")


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
        options = _with_run_options(ctx, out, options)
    with PersonDisplay() as display:
        metrics = run(PersonTrainConfig(**options), flic, out, resume=resume, force=force, on_progress=display)
    score = metrics["val_recall"][f"@{RECALL_AT[-1]}"]
    scored = f"validation recall@{RECALL_AT[-1]} {score:.1f}" if math.isfinite(score) else "no validation frames"
    console.print(
        f"done: {plain(out / 'best.pt')} ({scored}), metrics in {plain(out / 'metrics.jsonl')}", soft_wrap=True
    )


def _with_run_options(ctx: typer.Context, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """On --resume, options not given on the command line take the values the run was started with."""
    from cnnmrf.models.person import load_person_checkpoint

    recorded = (
        dict(load_person_checkpoint(out / "last.pt").get("train_config") or {}) if (out / "last.pt").is_file() else {}
    )
    given = {p.name for p in ctx.command.params if getattr(ctx.get_parameter_source(p.name), "name", "") != "DEFAULT"}
    cli_name = {"max_steps_per_epoch": "max_steps"}
    return {k: v if cli_name.get(k, k) in given or k not in recorded else recorded[k] for k, v in options.items()}
