"""The one training loop behind `train-detector`, `train-mrf` and `train-joint` (single process or torchrun/DDP)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from cnnmrf.data.dataset import FlicDataset, holdout_rows
from cnnmrf.data.format import open_dataset, read_split
from cnnmrf.data.geometry import input_to_heatmap
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.devices import Resolved, autocast, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.pck import PCKResult, evaluate_pck
from cnnmrf.files import output_folder
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import final_joints, predict_rows
from cnnmrf.interrupts import check_interrupted
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.losses import LOSSES
from cnnmrf.models.checkpoint import checkpoint_state, load_checkpoint, model_from_checkpoint
from cnnmrf.models.detector import DETECTOR_PRESETS, DetectorConfig
from cnnmrf.models.pose import PoseConfig, PoseModel, spatial_config_for
from cnnmrf.models.spatial import displacement_histograms
from cnnmrf.training.config import Schedule, Stage, TrainConfig
from cnnmrf.training.optim import (
    build_optimizer,
    check_loss,
    lr_lambda,
    optimizer_step,
    stage_loss,
    steps_per_epoch,
)
from cnnmrf.training.runs import check_resume, check_run_folder, jsonable, run_record, write_epoch

VALIDATION_GROUPS: tuple[str, ...] = ("wrist", "elbow", "shoulder", "hip", "mean")  # PCK@0.2 kept in metrics.jsonl


@dataclass(frozen=True)
class TrainProgress:
    """Where a run is, for whoever shows it (rank 0 only); the CLI draws a bar per epoch and a table after it.

    Reported at the start of every epoch (``step`` 0), after every step, and once more at the end of the epoch with
    ``validation`` set (after the epoch's checkpoints and metrics line are written).
    """

    epoch: int  # 1-based, as in metrics.jsonl
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    loss: float  # mean training loss over this epoch's steps so far (nan before the first)
    images_per_s: float  # training throughput this epoch, all processes together
    precision: Resolved  # the detector's arithmetic, and why
    device: torch.device
    validation: PCKResult | None = None  # PCK of the held-out examples, at the end of the epoch
    num_validation: int = 0  # held-out examples scored


def train(
    config: TrainConfig,
    data: Path,
    out: Path,
    *,
    detector_ckpt: Path | None = None,
    mrf_ckpt: Path | None = None,
    resume: bool = False,
    force: bool = False,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_epoch_end: Callable[[int, PoseModel], None] | None = None,
) -> dict[str, Any]:
    """Train one stage and write ``out/last.pt``, ``out/best.pt`` and ``out/metrics.jsonl``.

    Args:
        config: the run's settings.
        data: HDF5 dataset from ``cnnmrf preprocess``.
        out: run folder.
        detector_ckpt: checkpoint whose detector starts the ``mrf`` and ``joint`` stages.
        mrf_ckpt: checkpoint with detector and spatial model that starts the ``joint`` stage.
        resume: continue from ``out/last.pt`` (model, optimiser, schedule, epoch), with the run's options, dataset and
            starting checkpoints (only those of :data:`cnnmrf.training.runs.SAFE_TO_CHANGE` may differ).
        force: start afresh even if ``out`` holds a previous run's files (each is replaced when the new run writes
            its own, after its first epoch).
        on_progress: called on rank 0 with each :class:`TrainProgress` report (the loop itself prints nothing).
        on_epoch_end: hook for tests and tools, called on every rank after each epoch (once its checkpoints are
            written) with the epoch number (1-based, as in metrics.jsonl) and the unwrapped model.

    Returns:
        The last epoch's metrics (rank 0's; {} on the other processes of a torchrun, which neither validate nor
        write).

    Raises:
        CnnmrfError: conflicting options, an --out that cannot hold the run or holds another, a resume that differs
            from its run, a missing or foreign dataset or checkpoint, a full disk, or a non-finite loss.
    """
    config = replace(config)  # checks the choice fields again (and fills the stage's defaults)
    out = Path(out)
    check_run_folder(config, out, resume, force, detector_ckpt, mrf_ckpt)
    if not is_main_process():  # only the first process writes
        return _train(config, data, out, detector_ckpt, mrf_ckpt, resume, on_progress, on_epoch_end)
    with output_folder(out, f"train-{config.stage.value}"):
        check_run_folder(config, out, resume, force, detector_ckpt, mrf_ckpt)  # again, held: no other run is starting
        return _train(config, data, out, detector_ckpt, mrf_ckpt, resume, on_progress, on_epoch_end)


def is_main_process() -> bool:
    """Whether this process is the one that reports and writes: the only one, or rank 0 of a torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(
    config: TrainConfig,
    data: Path,
    out: Path,
    detector_ckpt: Path | None,
    mrf_ckpt: Path | None,
    resume: bool,
    on_progress: Callable[[TrainProgress], None] | None,
    on_epoch_end: Callable[[int, PoseModel], None] | None,
) -> dict[str, Any]:
    """:func:`train` once its run folder is checked (and, on rank 0, created and held)."""
    # ---- processes: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; otherwise a single process -------------------------
    world, rank, device = _setup_distributed(config.device.value)
    main_process = rank == 0
    report = on_progress if main_process else None
    torch.manual_seed(config.seed)

    # ---- data: a fixed held-out validation part of the training split ------------------------------------------
    with open_dataset(data) as dataset:
        prep = dataset.config
        n_train = dataset.num_rows("train")
        labels = dataset.read("train", ("joints_input", "visible", "index"))
    train_joints, train_visible = labels["joints_input"], labels["visible"]  # (N, K, 2) model-input pixels, (N, K)
    train_rows, val_rows = holdout_rows(n_train, config.val_fraction, config.seed)
    if len(train_rows) == 0:
        raise CnnmrfError(
            f"--val-fraction {config.val_fraction} holds out all {n_train} training examples of {data}, leaving none "
            f"to train on; give a smaller one"
            if n_train
            else f"{data} has no training examples"
        )
    if config.val_limit:
        val_rows = val_rows[: config.val_limit]
    train_set = FlicDataset(data, "train", rows=train_rows, augment=config.augment, seed=config.seed)
    sampler = DistributedSampler(
        train_set,
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=config.seed,
        drop_last=len(train_set) >= world * config.batch_size,
    )

    # ---- model: built fresh, or from earlier stages' checkpoints --------------------------------------------------
    start_epoch, best_pck, history = 0, -1.0, []
    record = run_record(data, prep, labels["index"], detector_ckpt, mrf_ckpt)
    resume_state = load_checkpoint(out / "last.pt") if resume else None
    if resume_state is not None:
        start_epoch = check_resume(config, resume_state, record, out)
        model = model_from_checkpoint(resume_state)
    else:
        model = _initial_model(config, prep.input_size, detector_ckpt, mrf_ckpt, train_joints, train_visible)
    if model.config.detector.input_size != prep.input_size:
        raise CnnmrfError(
            f"the model expects {model.config.detector.input_size}px inputs but {data} holds "
            f"{prep.input_size}px crops; preprocess with --input-size {model.config.detector.input_size}"
        )
    if model.config.detector.stride != prep.heatmap_stride:
        raise CnnmrfError(
            f"the model's heatmap stride is {model.config.detector.stride} but {data} holds targets at "
            f"stride {prep.heatmap_stride}; preprocess with --heatmap-stride "
            f"{model.config.detector.stride}"
        )
    model.to(device)
    if config.stage is Stage.mrf:
        model.detector.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, model)
    epoch_steps = steps_per_epoch(len(sampler), config.batch_size, config.max_steps_per_epoch)
    schedule = lr_lambda(config.warmup_steps, epoch_steps * config.epochs, config.schedule is Schedule.constant)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        best_pck = resume_state["best_pck"]
        history = list(resume_state.get("history", []))
        torch.set_rng_state(resume_state["rng"]["torch"])
    precision = resolve_precision(config.precision, device)
    if precision.dtype == torch.bfloat16:
        # The layout oneDNN's bf16 convolutions want; set before DDP lays out its gradient buckets, so that they match
        # the gradients' strides (else every step copies each gradient: "Grad strides do not match bucket view").
        model.detector.to(memory_format=torch.channels_last)
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_fn = LOSSES[config.loss.value]

    train_config = jsonable(asdict(config))
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, config.epochs):
        # ---- one epoch of training ---------------------------------------------------------------------------------
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=len(sampler) >= config.batch_size,
            pin_memory=device.type == "cuda",
        )
        wrapped.train()
        if config.stage is Stage.mrf:
            model.detector.eval()  # frozen: keep BatchNorm statistics fixed
        started, seen, loss_sum, wait = time.perf_counter(), 0, 0.0, 0.0
        progress = TrainProgress(epoch + 1, config.epochs, 0, epoch_steps, float("nan"), 0.0, precision, device)
        if report is not None:
            report(progress)
        fetched = time.perf_counter()
        for step, batch in enumerate(loader):
            check_interrupted()
            if step >= epoch_steps:
                break
            wait += time.perf_counter() - fetched
            images = batch["image"].to(device, non_blocking=True)  # (B, 3, S, S)
            if precision.dtype == torch.bfloat16:
                images = images.contiguous(memory_format=torch.channels_last)
            target = batch["heatmaps"].to(device, non_blocking=True)  # (B, K, H, W)
            visible = batch["visible"].to(device, non_blocking=True)  # (B, K)
            with autocast(device, precision.dtype):
                out_maps = wrapped(images)
            loss = stage_loss(config, loss_fn, out_maps, target, visible)  # float32
            check_loss(loss, epoch, step, out)
            optimizer_step(loss, optimizer, scheduler, trainable, config.grad_clip)
            seen += images.shape[0] * world
            loss_sum += loss.item()
            if report is not None:
                rate = seen / (time.perf_counter() - started)
                report(replace(progress, step=step + 1, loss=loss_sum / (step + 1), images_per_s=rate))
            fetched = time.perf_counter()
        seconds = time.perf_counter() - started

        # ---- validation, logging and checkpoints (rank 0) ---------------------------------------------------------
        if main_process:
            result = _validate(model, data, val_rows, device, precision.dtype, Decoder(sigma=prep.heatmap_sigma))
            val = {name: 100 * result.at(name, 0.2) for name in VALIDATION_GROUPS}
            metrics = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(1, epoch_steps),
                "val_pck@0.2": val,
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(seconds, 2),
                "images_per_s": round(seen / seconds, 2),
                "data_wait_fraction": round(wait / seconds, 4),
                "precision": precision.name,
            }
            history.append(metrics)
            # With nothing held out (or scored) the PCK is NaN: best.pt is then the latest epoch's, never missing.
            improved = val["mean"] > best_pck or best_pck < 0
            best_pck = max(best_pck, val["mean"]) if np.isfinite(val["mean"]) else best_pck
            state = checkpoint_state(
                model,
                prep,
                train_config,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                epoch=epoch,
                best_pck=best_pck,
                history=history,
                rng={"torch": torch.get_rng_state()},
                run=record,
            )
            write_epoch(out, state, history, improved)
            if report is not None:
                end = replace(progress, step=epoch_steps, validation=result, num_validation=len(val_rows))
                report(replace(end, loss=metrics["train_loss"], images_per_s=metrics["images_per_s"]))
        if world > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model)
    if world > 1:
        dist.destroy_process_group()
    return metrics


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Start the process group under torchrun; return (world size, rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    use_cuda = device.type == "cuda"
    if use_cuda:  # one GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return world, rank, device


def _initial_model(
    config: TrainConfig,
    input_size: int,
    detector_ckpt: Path | None,
    mrf_ckpt: Path | None,
    joints: np.ndarray,
    visible: np.ndarray,
) -> PoseModel:
    """The model a fresh run starts from."""
    if mrf_ckpt is not None:
        model = model_from_checkpoint(load_checkpoint(mrf_ckpt))
        if model.spatial is None:
            raise CnnmrfError(f"{mrf_ckpt} has no spatial model; give a checkpoint from train-mrf")
        return model
    if detector_ckpt is not None:
        detector = model_from_checkpoint(load_checkpoint(detector_ckpt)).detector
        detector_config = _upgraded_config(detector.config, config.preset.value)
    else:
        detector, detector_config = None, DETECTOR_PRESETS[config.preset.value]()
        detector_config.input_size = input_size
    spatial = None
    if config.stage is not Stage.detector:
        spatial = spatial_config_for(detector_config)
    model = PoseModel(PoseConfig(detector=detector_config, spatial=spatial))
    if detector is not None:
        missing, unexpected = model.detector.load_state_dict(detector.state_dict(), strict=False)
        if unexpected or any(not key.startswith("refine.") for key in missing):
            raise CnnmrfError(f"the detector in {detector_ckpt} does not fit the model being trained")
    if model.spatial is not None:
        # Initialise the pairwise priors from the training split's joint displacements (heatmap pixels).
        hm_joints = input_to_heatmap(joints, detector_config.stride)  # (N, K, 2)
        hist = displacement_histograms(
            hm_joints, visible, model.spatial.config.heatmap_size, model.spatial.config.histogram_sigma
        )
        model.spatial.init_from_histogram(hist)
    return model


def _upgraded_config(checkpoint: DetectorConfig, preset: str) -> DetectorConfig:
    """The checkpoint's detector config, with the stride-2 head if ``preset`` is the same network plus that head.

    So ``--init`` of a `small` checkpoint with ``--preset small-hr`` keeps every trained layer and adds the
    (zero-initialised) stride-2 correction; any other preset leaves the checkpoint's config as it is.
    """
    wanted = DETECTOR_PRESETS[preset]()
    head = {"output_stride": wanted.output_stride, "refine_channels": wanted.refine_channels}
    same_body = replace(wanted, input_size=checkpoint.input_size) == replace(checkpoint, **head)
    return replace(checkpoint, **head) if same_body else checkpoint


@torch.no_grad()
def _validate(
    model: PoseModel, data: Path, rows: np.ndarray, device: torch.device, dtype: torch.dtype, decoder: Decoder
) -> PCKResult:
    """PCK of the current model on the held-out rows, in original-image pixels."""
    if len(rows) == 0:  # nothing held out: an all-NaN result
        return evaluate_pck(np.full((1, len(JOINT_NAMES), 2), np.nan), np.zeros((1, len(JOINT_NAMES), 2)))
    truth = read_split(data, "train", ("joints",), rows)["joints"]  # (N, K, 2) original pixels
    config = InferenceConfig(decoder=decoder, dtype=dtype)
    sets = predict_rows(model, data, "train", rows, batch_size=64, device=device, config=config)
    pred = final_joints(sets).joints
    return evaluate_pck(pred, truth)
