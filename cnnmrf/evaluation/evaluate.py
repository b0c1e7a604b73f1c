"""Score a checkpoint on the test split with the FLIC protocol and write metrics.json, predictions.json and pck.png."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.format import PreprocessConfig, open_dataset
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.devices import resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.holdout import HoldOut, resolve_holdout
from cnnmrf.evaluation.options import EvaluateOptions, Split
from cnnmrf.evaluation.pck import PCKResult, evaluate_pck
from cnnmrf.evaluation.report import plot_pck_curves, save_metrics, save_predictions
from cnnmrf.files import check_output_folder, output_folder, written_together
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import DETECTOR, SPATIAL, predict_rows
from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint

OUTPUT_NAMES: tuple[str, ...] = ("metrics.json", "predictions.json", "pck.png")
GEOMETRY_FIELDS: tuple[str, ...] = ("input_size", "crop_scale", "heatmap_stride")
LABELS: dict[str, str] = {SPATIAL: "ConvNet + MRF", DETECTOR: "ConvNet alone"}
# How metrics.json names the results (a stable file format): the spatial model's output is the "full" model's.
METRICS_NAMES: dict[str, str] = {SPATIAL: "full", DETECTOR: "detector"}


@dataclass
class Evaluation:
    """What an evaluation produced: PCK per model output ("detector", and "spatial" with a spatial model)."""

    results: dict[str, PCKResult]
    headline: str  # key of the main result: "spatial" when the spatial model ran, else "detector"
    num_examples: int  # test examples scored
    observer_centric: bool  # ground-truth convention of the dataset
    seconds: float
    precision: str = "fp32"  # the detector's arithmetic: fp32 or bf16
    files: list[Path] = field(default_factory=list)
    holdout: HoldOut | None = None  # with split val: the held-out rows' share and seed, and where they came from

    @property
    def result(self) -> PCKResult:
        """The main result."""
        return self.results[self.headline]


def check_outputs(out: Path, force: bool) -> None:
    """Refuse to overwrite an earlier evaluation in ``out`` without ``force``.

    Raises:
        CnnmrfError: ``out`` is a file or cannot be written in, or it holds metrics.json, predictions.json or pck.png
            and not ``force``.
    """
    check_output_folder(out)  # a file, or not writable: said before the work, not after it
    existing = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if existing and not force:
        raise CnnmrfError(f"{out} already holds {', '.join(existing)}; pass --force to overwrite")


def check_geometry(trained: PreprocessConfig, prep: PreprocessConfig, checkpoint: Path, data: Path) -> None:
    """The checkpoint must have been trained on crops of the dataset's geometry.

    Args:
        trained: the crop geometry the checkpoint's model was trained on.
        prep: the dataset's crop geometry.
        checkpoint: the checkpoint's path (for the message).
        data: the dataset's path (for the message).

    Raises:
        CnnmrfError: its input size, crop scale or heatmap stride differ.
    """
    theirs = {k: getattr(trained, k) for k in GEOMETRY_FIELDS}
    ours = {k: getattr(prep, k) for k in GEOMETRY_FIELDS}
    if any(float(theirs[k]) != float(ours[k]) for k in GEOMETRY_FIELDS):

        def describe(g: dict[str, Any]) -> str:
            return f"{g['input_size']}px crops at crop scale {g['crop_scale']:g}, stride {g['heatmap_stride']}"

        flags = " ".join(f"--{k.replace('_', '-')} {theirs[k]:g}" for k in GEOMETRY_FIELDS)
        raise CnnmrfError(
            f"checkpoint {checkpoint} was trained on {describe(theirs)} but {data} holds "
            f"{describe(ours)}; re-run `cnnmrf preprocess` with {flags}"
        )


def evaluate_checkpoint(
    data: Path,
    checkpoint: Path,
    out: Path,
    options: EvaluateOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Evaluation:
    """Predict every test example, score PCK in original-image pixels and write the outputs into ``out``.

    Ground truth is the dataset's ``test/joints`` (observer-centric unless preprocessed with --person-centric).
    When the spatial model runs, the detector alone is scored from the same forward passes. Writes
    ``predictions.json`` (main model), ``pck.png`` (main model solid, detector alone dashed) and, last,
    ``metrics.json`` (main result at the top level, plus the "detector" and "full" (spatial model) results and the
    run's settings). ``out`` is held for the whole command (a second command writing into it is refused) and checked
    for earlier outputs once held.

    With ``split`` val, the held-out rows are the checkpoint's training run's
    (:func:`cnnmrf.evaluation.holdout.resolve_holdout`).

    Args:
        data: HDF5 dataset from ``cnnmrf preprocess``.
        checkpoint: model checkpoint.
        out: output folder (created).
        options: inference settings.
        on_progress: called with (done, total) examples.
        on_note: called with a note to show before the work (held-out rows assumed, not recorded).

    Raises:
        CnnmrfError: existing outputs without ``force``, another command writing into ``out``, a missing or foreign
            dataset or checkpoint, mismatched crop geometry, an empty split, or with split val a ``val_fraction`` or
            ``seed`` other than the checkpoint's without ``force``.
    """
    options = options or EvaluateOptions()
    started = time.perf_counter()
    data, checkpoint, out = Path(data), Path(checkpoint), Path(out)
    with output_folder(out, "evaluate"):  # one command at a time: held, then checked, then written
        check_outputs(out, options.force)
        return _evaluate(data, checkpoint, out, options, started, on_progress, on_note)


def _evaluate(
    data: Path,
    checkpoint: Path,
    out: Path,
    options: EvaluateOptions,
    started: float,
    on_progress: Callable[[int, int], None] | None,
    on_note: Callable[[str], None] | None,
) -> Evaluation:
    """The body of :func:`evaluate_checkpoint`, run with ``out`` held and checked."""
    state = load_checkpoint(checkpoint)
    trained = preprocess_from_checkpoint(state, checkpoint)
    holdout = None
    if options.split is Split.val:
        given = (options.val_fraction, options.seed)
        holdout, note = resolve_holdout(state.get("train_config"), *given, options.force, checkpoint)
        if note is not None and on_note is not None:
            on_note(note)
        options = replace(options, val_fraction=holdout.val_fraction, seed=holdout.seed)
    with open_dataset(data) as dataset:
        prep = dataset.config
        source = "train" if options.split is Split.val else "test"
        total = dataset.num_rows(source) if source in dataset.splits else 0
        rows = np.arange(total)
        if holdout is not None:
            rows = holdout_rows(total, holdout.val_fraction, holdout.seed)[1]
        rows = rows if options.limit is None else rows[: options.limit]
        if len(rows) == 0:
            raise CnnmrfError(f"{data} has no {options.split.value} examples")
        labels = dataset.read(source, ("joints", "index", "file"), rows)
    truth = labels["joints"].astype(np.float64)  # (N, K, 2) original pixels
    indices = labels["index"]  # (N,) FLIC example indices
    files = [str(f) for f in labels["file"]]
    check_geometry(trained, prep, checkpoint, data)
    model = model_from_checkpoint(state).eval()
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    model = model.to(device)

    config = InferenceConfig(
        use_spatial=options.use_spatial,
        flip_test=options.flip_test,
        scales=options.scales,
        decoder=Decoder(options.decoding, prep.heatmap_sigma),
        dtype=precision.dtype,
    )
    sets = predict_rows(model, data, source, rows, options.batch_size, device, config, on_progress)
    results = {name: evaluate_pck(joints.joints, truth) for name, joints in sets.items()}
    headline = SPATIAL if SPATIAL in results else DETECTOR
    seconds = time.perf_counter() - started

    with written_together():  # all three files or none
        final = sets[headline]
        save_predictions(out / "predictions.json", indices, files, final.joints, final.scores)
        other = results[DETECTOR] if headline == SPATIAL else None
        plot_pck_curves(
            results[headline], out / "pck.png", label=LABELS[headline], other=other, other_label=LABELS[DETECTOR]
        )
        extra = {
            "headline": METRICS_NAMES[headline],
            **{METRICS_NAMES[name]: result.to_dict() for name, result in results.items()},
            "checkpoint": str(checkpoint),
            "dataset": str(data),
            "split": options.split.value,
            "observer_centric": bool(prep.observer_centric),
            "num_split_examples": int(total),  # examples in the split scored (before --limit)
            "options": {
                **asdict(options),
                "scales": list(options.scales),
                "spatial_model": model.spatial is not None,
                "precision": precision.name,
                "precision_reason": precision.reason,
                "held_out_from": None if holdout is None else holdout.source,
            },
            "seconds": round(seconds, 2),
        }
        save_metrics(out / "metrics.json", results[headline], extra)
    return Evaluation(
        results=results,
        headline=headline,
        num_examples=len(rows),
        observer_centric=bool(prep.observer_centric),
        seconds=seconds,
        precision=precision.name,
        files=[out / name for name in OUTPUT_NAMES],
        holdout=holdout,
    )
