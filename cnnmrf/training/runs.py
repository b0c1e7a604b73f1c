"""A run folder: what it holds, the checks before a run starts or resumes, and each epoch's outputs, written whole."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_write_bytes, check_output_folder
from cnnmrf.models.checkpoint import load_checkpoint, save_checkpoint
from cnnmrf.training.config import Stage, TrainConfig

RUN_FILES: tuple[str, ...] = ("last.pt", "best.pt", "metrics.jsonl")  # what a run writes into its folder
# Options a resumed run may change: they decide where and how fast it runs, or (epochs) how long, not what it learns.
SAFE_TO_CHANGE: tuple[str, ...] = ("workers", "device", "precision", "epochs")
RESUME_KEYS: tuple[str, ...] = ("optimizer", "scheduler", "rng", "epoch", "best_pck", "train_config")


def check_run_folder(
    config: TrainConfig, out: Path, resume: bool, force: bool, detector_ckpt: Path | None, mrf_ckpt: Path | None
) -> None:
    """Refuse conflicting options, an --out that cannot be a run folder, and replacing a previous run's files.

    Raises:
        CnnmrfError: train-mrf without --detector, --resume with --force, --out a file or not writable, --resume
            without ``out/last.pt``, or (without --resume or --force) a folder holding any of :data:`RUN_FILES`; each
            message says what to do instead (--resume only where ``out/last.pt`` exists).
    """
    if config.stage is Stage.mrf and detector_ckpt is None and not resume:
        raise CnnmrfError("train-mrf needs --detector CKPT (a checkpoint from train-detector)")
    check_run_files(out, resume, force)


def check_run_files(out: Path, resume: bool, force: bool) -> None:
    """Refuse --resume with --force, an --out that cannot be a run folder, --resume without ``out/last.pt``, and
    (without --resume or --force) replacing a folder that holds any of :data:`RUN_FILES`; every training command's rule.

    Raises:
        CnnmrfError: each message says what to do instead (--resume only where ``out/last.pt`` exists).
    """
    if resume and force:
        raise CnnmrfError("--resume and --force contradict each other: pick one")
    check_output_folder(out)
    existing = [name for name in RUN_FILES if (out / name).exists()]
    resumable = (out / "last.pt").is_file()
    if resume and not resumable:
        instead = "pass --force instead of --resume to start it afresh" if existing else "drop --resume to start a run"
        raise CnnmrfError(f"--resume: {out / 'last.pt'} does not exist, so there is no run to continue; {instead}")
    if existing and not resume and not force:
        what = "pass --resume to continue it (from last.pt) or --force to replace it"
        if not resumable:
            what = "it has no last.pt to continue from: pass --force to replace it, or give another --out"
        raise CnnmrfError(f"{out} already holds a run ({', '.join(existing)}); {what}")


def jsonable(value: Any) -> Any:
    """Enums to their values and tuples to lists, recursively, so a config is plain data."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def run_record(
    data: Path, prep: PreprocessConfig, train_index: np.ndarray, detector_ckpt: Path | None, mrf_ckpt: Path | None
) -> dict[str, Any]:
    """What a run was started from, kept in its checkpoints so that a resume can tell whether it still is: the dataset
    (its crop geometry and which FLIC examples its training split holds) and the checkpoints it started from."""
    return {
        "dataset": {
            "file": str(data),
            "preprocess": asdict(prep),
            "train_examples": int(len(train_index)),
            "train_index_sha1": hashlib.sha1(np.asarray(train_index, dtype=np.int64).tobytes()).hexdigest(),
        },
        "detector": None if detector_ckpt is None else str(Path(detector_ckpt).resolve()),
        "mrf": None if mrf_ckpt is None else str(Path(mrf_ckpt).resolve()),
    }


def recorded_options(out: Path) -> dict[str, Any]:
    """The options the run in ``out`` was started with (``out/last.pt``'s ``train_config``; {} if there is none)."""
    if not (Path(out) / "last.pt").is_file():
        return {}
    return dict(load_checkpoint(Path(out) / "last.pt").get("train_config") or {})


def check_resume(config: TrainConfig, state: dict[str, Any], record: dict[str, Any], out: Path) -> int:
    """Check that a run can go on as asked: the same options (but :data:`SAFE_TO_CHANGE`), the same dataset and
    starting checkpoints, a complete training state, and epochs left to do.

    Args:
        config: the resumed run's settings.
        state: its ``last.pt``.
        record: :func:`run_record` of the resumed run.
        out: the run folder, for messages.

    Returns:
        The number of epochs done, where the run goes on.

    Raises:
        CnnmrfError: naming every difference, or that last.pt holds no training state, or that no epoch is left.
    """
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CnnmrfError(
            f"--resume: {out / 'last.pt'} holds no training state ({', '.join(missing)}); pass --force instead of "
            f"--resume to start afresh"
        )
    differences = option_differences(jsonable(asdict(config)), state["train_config"], SAFE_TO_CHANGE)
    before = state.get("run") or {}
    if before.get("dataset"):
        was, now = dict(before["dataset"]), dict(record["dataset"])
        if {k: v for k, v in was.items() if k != "file"} != {k: v for k, v in now.items() if k != "file"}:
            differences.append(f"the dataset {was['file']} -> {now['file']} (other examples or crops)")
    for key in ("detector", "mrf"):
        if record[key] is not None and before.get(key) != record[key]:
            differences.append(f"--{key} {before.get(key)} -> {record[key]}")
    if differences:
        raise CnnmrfError(
            f"--resume: the run in {out} was started otherwise: {'; '.join(differences)}. Give its options again "
            f"(only {', '.join('--' + k for k in SAFE_TO_CHANGE)} may change), or start afresh with --force"
        )
    done = int(state["epoch"]) + 1
    if config.epochs <= done:
        raise CnnmrfError(
            f"--resume: the run in {out} has done {done} epoch(s) of {config.epochs}; pass --epochs N with N > {done} "
            f"to train it longer"
        )
    return done


def option_differences(ours: dict[str, Any], theirs: dict[str, Any], safe: tuple[str, ...]) -> list[str]:
    """``--option old -> new`` for each option (a config's plain data) a resumed run sets otherwise than the run it
    continues, but those in ``safe``."""
    return [
        f"--{key.replace('_', '-')} {_show(theirs[key])} -> {_show(ours[key])}"
        for key in ours
        if key in theirs and key not in safe and ours[key] != theirs[key]
    ]


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def write_epoch(out: Path, state: dict[str, Any], history: list[dict[str, Any]], improved: bool) -> None:
    """An epoch's outputs: ``best.pt`` (if ``improved``), ``last.pt`` and ``metrics.jsonl`` (the run's whole history,
    one line per epoch, replaced whole: it always matches ``last.pt``, also after a resume or a crash)."""
    if improved:
        save_checkpoint(out / "best.pt", state)
    save_checkpoint(out / "last.pt", state)
    atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history).encode())
