"""The person detector's training loop (`cnnmrf train-person`): one plain loop, validated by torso-box recall."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cnnmrf.data.flic import FlicSource
from cnnmrf.data.person_frames import PersonAugment, PersonFrame, PersonFrameDataset, train_val_frames
from cnnmrf.devices import Resolved, autocast, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.frames import matches_person, read_frame, synthetic_clutter
from cnnmrf.files import atomic_write_bytes, output_folder
from cnnmrf.inference.person_boxes import detect_people
from cnnmrf.interrupts import check_interrupted
from cnnmrf.losses_person import person_loss
from cnnmrf.models.person import (
    PERSON_PRESETS,
    PersonDetector,
    load_person_checkpoint,
    person_detector_from,
    save_person_checkpoint,
)
from cnnmrf.training.optim import check_loss, decay_groups, lr_lambda, optimizer_step, steps_per_epoch
from cnnmrf.training.person_config import (
    BEST_RECALL_AT,
    NEGATIVE_SEED,
    PERSON_SAFE_TO_CHANGE,
    RECALL_AT,
    PersonTrainConfig,
)
from cnnmrf.training.runs import check_run_files, option_differences

RESUME_KEYS: tuple[str, ...] = ("optimizer", "scheduler", "rng", "epoch", "best_recall", "train_config", "run")


@dataclass(frozen=True)
class PersonProgress:
    """Where a run is: reported at each epoch's start (step 0), after each step, and at its end with ``recall``."""

    epoch: int  # 1-based, as in metrics.jsonl
    epochs: int
    step: int
    steps: int
    loss: float  # mean training loss of this epoch so far (nan before the first step)
    images_per_s: float
    precision: Resolved
    device: torch.device
    recall: dict[str, float] | None = None  # validation recall@k in percent, at the end of an epoch
    num_validation: int = 0  # annotated people in the validation frames


def train_person(
    config: PersonTrainConfig,
    flic: Path,
    out: Path,
    *,
    resume: bool = False,
    force: bool = False,
    on_progress: Callable[[PersonProgress], None] | None = None,
) -> dict[str, Any]:
    """Train the person detector on whole FLIC frames; write ``out/last.pt``, ``out/best.pt``, ``out/metrics.jsonl``.

    Args:
        config: the run's settings.
        flic: the FLIC folder or FLIC.zip.
        out: run folder.
        resume: continue from ``out/last.pt`` with the run's options (but :data:`PERSON_SAFE_TO_CHANGE`).
        force: start afresh even if ``out`` holds a run.
        on_progress: called with each :class:`PersonProgress` (the loop itself prints nothing).

    Returns:
        The last epoch's metrics.

    Raises:
        CnnmrfError: conflicting options, an --out that cannot hold the run, a resume that differs from its run, a
            missing or damaged FLIC copy, or a non-finite loss.
    """
    config, out = replace(config), Path(out)
    check_run_files(out, resume, force)
    source = FlicSource(flic)
    with output_folder(out, "train-person"):
        check_run_files(out, resume, force)  # again, held
        return _train(config, source, out, resume, on_progress)


def _train(
    config: PersonTrainConfig,
    flic: FlicSource,
    out: Path,
    resume: bool,
    on_progress: Callable[[PersonProgress], None] | None,
) -> dict[str, Any]:
    """:func:`train_person` once its run folder is checked and held."""
    device = resolve_device(config.device.value)
    torch.manual_seed(config.seed)
    train_frames, val_frames = train_val_frames(flic, config.val_fraction, config.seed)
    if not train_frames:
        raise CnnmrfError(f"--val-fraction {config.val_fraction} leaves no training frames in {flic.path}")
    record = {
        "flic": str(flic.path),
        "train_frames": len(train_frames),
        "train_frames_sha1": hashlib.sha1("\n".join(f.file for f in train_frames).encode()).hexdigest(),
    }
    start_epoch, best, history = 0, -1.0, []
    state = load_person_checkpoint(out / "last.pt") if resume else None
    if state is not None:
        start_epoch = _check_resume(config, state, record, out)
        model = person_detector_from(state, str(out / "last.pt"))
    else:
        model = PersonDetector(PERSON_PRESETS[config.preset.value]())
    model.to(device)
    stride = model.config.stride
    augment = PersonAugment(
        input_size=config.input_size,
        min_torso=config.min_torso,
        max_torso=config.max_torso,
        tile=config.tile,
        background=config.background,
        far_weight=config.far_weight,
    )
    num_negatives = round(config.negative_share / (1 - config.negative_share) * len(train_frames))
    photos = synthetic_clutter(config.negatives, NEGATIVE_SEED + config.seed) if num_negatives else []
    negatives = [np.asarray(p) for p in photos]
    dataset = PersonFrameDataset(flic, train_frames, stride, augment, negatives, num_negatives, config.seed)
    steps = steps_per_epoch(len(dataset), config.batch_size, config.max_steps_per_epoch)
    optimizer = torch.optim.Adam(decay_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.warmup_steps, steps * config.epochs))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best, history = float(state["best_recall"]), list(state.get("history", []))
        torch.set_rng_state(state["rng"]["torch"])
    precision = resolve_precision(config.precision, device)
    if precision.dtype == torch.bfloat16:
        model.to(memory_format=torch.channels_last)  # oneDNN's layout for bf16 convolutions
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, config.epochs):
        dataset.set_epoch(epoch)
        order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=torch.randperm(len(dataset), generator=order).tolist(),
            num_workers=config.workers,
            drop_last=len(dataset) >= config.batch_size,
        )
        model.train()
        progress = PersonProgress(epoch + 1, config.epochs, 0, steps, math.nan, 0.0, precision, device)
        if on_progress is not None:
            on_progress(progress)
        started, seen, done, loss_sum = time.perf_counter(), 0, 0, 0.0
        parts_sum = {"focal": 0.0, "size": 0.0, "offset": 0.0}
        for step, batch in enumerate(loader):
            check_interrupted()
            if step >= steps:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            images = batch["image"].float().div_(255.0)  # (B, 3, S, S) in [0, 1]
            if precision.dtype == torch.bfloat16:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision.dtype):
                maps = model(images)
            loss, parts = person_loss(maps, batch)  # float32
            check_loss(loss, epoch, step, out)
            optimizer_step(loss, optimizer, scheduler, model.parameters(), config.grad_clip)
            seen, done = seen + images.shape[0], done + 1
            loss_sum += loss.item()
            parts_sum = {k: parts_sum[k] + parts[k] for k in parts_sum}
            if on_progress is not None:
                rate = seen / (time.perf_counter() - started)
                on_progress(replace(progress, step=step + 1, loss=loss_sum / (step + 1), images_per_s=rate))
        seconds = time.perf_counter() - started
        recall, num_people = validate_person(model, flic, val_frames, config.val_long_side, precision.dtype, device)
        done = max(1, done)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / done,
            "train_parts": {k: v / done for k, v in parts_sum.items()},
            "val_recall": recall,
            "val_people": num_people,
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 2),
            "images_per_s": round(seen / seconds, 2),
            "precision": precision.name,
        }
        history.append(metrics)
        score = recall.get(f"@{BEST_RECALL_AT}", math.nan)
        improved = best < 0 or (math.isfinite(score) and score > best)
        best = max(best, score) if math.isfinite(score) else best
        extra = {
            "train_config": config.plain(),
            "epoch": epoch,
            "best_recall": best,
            "history": history,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "run": record,
        }
        if improved:
            save_person_checkpoint(out / "best.pt", model, **extra)
        save_person_checkpoint(out / "last.pt", model, **extra)
        atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history).encode())
        if on_progress is not None:
            end = replace(progress, step=steps, loss=metrics["train_loss"], images_per_s=metrics["images_per_s"])
            on_progress(replace(end, recall=recall, num_validation=num_people))
    # best.pt's epoch: the first with the best recall (the last where no frame validates: each epoch replaces it)
    at = f"@{BEST_RECALL_AT}"
    best_epoch = next((h["epoch"] for h in history if h["val_recall"].get(at) == best), metrics["epoch"])
    return {**metrics, "best_epoch": best_epoch, "best_recall": best}


def _check_resume(config: PersonTrainConfig, state: dict[str, Any], record: dict[str, Any], out: Path) -> int:
    """The epochs a resumed run has done, after checking it goes on as it was started.

    Raises:
        CnnmrfError: last.pt holds no training state, other options or frames, or no epoch is left.
    """
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CnnmrfError(f"--resume: {out / 'last.pt'} holds no training state ({', '.join(missing)})")
    differences = option_differences(config.plain(), dict(state["train_config"]), PERSON_SAFE_TO_CHANGE)
    before = dict(state["run"])
    if {k: v for k, v in before.items() if k != "flic"} != {k: v for k, v in record.items() if k != "flic"}:
        differences.append(f"the FLIC copy {before.get('flic')} -> {record['flic']} (other training frames)")
    if differences:
        raise CnnmrfError(
            f"--resume: the run in {out} was started otherwise: {'; '.join(differences)}; give its options again "
            f"or start afresh with --force"
        )
    done = int(state["epoch"]) + 1
    if config.epochs <= done:
        raise CnnmrfError(
            f"--resume: the run in {out} has done {done} of {config.epochs} epochs; pass --epochs N with N > {done}"
        )
    return done


@torch.no_grad()
def validate_person(
    model: PersonDetector,
    flic: FlicSource,
    frames: list[PersonFrame],
    long_side: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[dict[str, float], int]:
    """Recall (percent) of the frames' annotated torso boxes among the top-k boxes of one pass over each whole frame,
    for k in :data:`RECALL_AT` (a box matches as :func:`matches_person` says); and how many people were scored.
    NaN recalls when there are no frames."""
    was_training = model.training
    model.eval()
    found = {k: 0 for k in RECALL_AT}
    total = 0
    for frame in frames:
        check_interrupted()
        image, factor = read_frame(flic, frame.file)
        boxes = detect_people(model, image, max(RECALL_AT), long_side, dtype, device, factor)  # (k, 5) original pixels
        for k in RECALL_AT:
            found[k] += int(matches_person(boxes[:k, :4], frame.boxes).any(axis=0).sum())
        total += len(frame.boxes)
    model.train(was_training)
    return {f"@{k}": 100.0 * found[k] / total if total else math.nan for k in RECALL_AT}, total
