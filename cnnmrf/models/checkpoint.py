"""Checkpoints: one plain dict built in one place, written atomically, loaded without running code from the file."""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cnnmrf.data.format import PreprocessConfig, preprocess_config_from
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_write_bytes
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.pose import PoseConfig, PoseModel

CHECKPOINT_FORMAT = "cnnmrf-checkpoint-v1"
RECORD_KEYS = ("epoch", "best_pck", "history")  # what a training run records about itself
CALIBRATION_KEY = "calibration"  # score calibration, added by `cnnmrf calibrate` (plain data)
# What `evaluate` and `predict` need (an exported checkpoint holds these); training adds optimizer, scheduler, rng.
INFERENCE_KEYS = ("model_config", "preprocess", "joint_names", "train_config", "model", *RECORD_KEYS)


def checkpoint_state(
    model: PoseModel, preprocess: PreprocessConfig, train_config: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The checkpoint dict of a model: its config and weights, the joint names and the crop geometry it expects.

    Args:
        model: the pose model (its ``state_dict`` is stored, on whatever device it lives).
        preprocess: the crop geometry of the data it was trained on.
        train_config: the training run's settings as plain data (``{}`` when unknown).
        extra: further plain entries: ``epoch``, ``best_pck``, ``history`` and, for resuming, ``optimizer``,
            ``scheduler`` and ``rng`` states.
    """
    return {
        "model_config": model.config.to_dict(),
        "preprocess": asdict(preprocess),
        "joint_names": list(JOINT_NAMES),
        "train_config": train_config or {},
        "model": model.state_dict(),
        **extra,
    }


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` via a temporary file and a rename, so a crash never leaves a half file.

    Raises:
        CnnmrfError: ``path`` cannot be written (disk full, permissions), naming it; an older ``path`` is kept.
    """
    buffer = io.BytesIO()  # torch.save reports a full disk as an opaque RuntimeError: write the bytes ourselves
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _reason(err: BaseException) -> str:
    """The informative sentence of an error from torch.load, whole (not cut mid-word)."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    lines = (found[1] if found else text).strip().splitlines()
    first = re.split(r"(?<=\.)\s", lines[0].strip(), maxsplit=1)[0] if lines else type(err).__name__  # one sentence
    return first if len(first) <= 200 else first[:200].rsplit(" ", 1)[0] + " ..."


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only, no code is run) and check it:
    its joints, its model config (types and ranges), its crop geometry, its weights (all finite) and its records.

    Raises:
        CnnmrfError: the file is missing, not a PyTorch file, truncated, tampered with, holding objects other than
            weights, not a cnnmrf checkpoint, or one whose contents are invalid; always naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnmrfError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        raise CnnmrfError(f"{path} is an HDF5 file (a dataset?), not a checkpoint; give a .pt file from training")
    if not head.startswith(b"PK\x03\x04"):  # torch.save writes zip archives
        raise CnnmrfError(f"{path} is not a cnnmrf checkpoint (not a file written by torch.save)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _reason(err)
        if "Unsupported global" not in reason:
            raise CnnmrfError(f"{path} is not a readable checkpoint (truncated or corrupt?): {reason}") from err
        raise CnnmrfError(f"refusing to load {path}: it holds objects other than weights ({reason})") from err
    except Exception as err:  # damaged files fail in many ways: EOFError, BadZipFile, IndexError, KeyError, ...
        raise CnnmrfError(f"{path} is not a readable checkpoint (truncated or corrupt?): {_reason(err)}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CnnmrfError(f"{path} is not a cnnmrf checkpoint")
    check_checkpoint(state, f"checkpoint {path}")
    return state


def check_checkpoint(state: dict[str, Any], where: str) -> None:
    """Check what a checkpoint holds, so that no edited or damaged one gets further than loading.

    Args:
        state: the loaded checkpoint.
        where: what it is, for messages (e.g. "checkpoint runs/a/best.pt").

    Raises:
        CnnmrfError: other joints, an invalid model config or crop geometry, weights that are not a dict of tensors
            or not all finite, or records of the wrong type.
    """
    if state.get("joint_names") is not None and list(state["joint_names"]) != list(JOINT_NAMES):
        raise CnnmrfError(f"{where} has joints {state['joint_names']}, not {list(JOINT_NAMES)}")
    try:
        PoseConfig.from_dict(state.get("model_config"))
    except ValueError as err:
        raise CnnmrfError(f"{where} records an invalid model config: {err}") from err
    if "preprocess" in state:
        preprocess_config_from(state["preprocess"], where)
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise CnnmrfError(f"{where} holds no model weights (a dict of tensors)")
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CnnmrfError(f"{where} holds non-finite weights (NaN or infinity) in {', '.join(bad[:3])}")
    kinds = {"epoch": int, "best_pck": (int, float), "history": list, "train_config": dict}
    wrong = [key for key, kind in kinds.items() if key in state and not isinstance(state[key], kind)]
    if wrong:
        raise CnnmrfError(f"{where} records {', '.join(wrong)} of the wrong type")


def model_from_checkpoint(state: dict[str, Any]) -> PoseModel:
    """Rebuild the PoseModel stored in a checkpoint dict and load its weights.

    Raises:
        CnnmrfError: other joints than :data:`cnnmrf.joints.JOINT_NAMES`, or weights that do not fit the config.
    """
    try:
        if tuple(state["joint_names"]) != JOINT_NAMES:
            raise CnnmrfError(f"checkpoint joints {state['joint_names']} differ from {list(JOINT_NAMES)}")
        model = PoseModel(PoseConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CnnmrfError(f"checkpoint does not match the model it describes: {_reason(err)}") from err
    return model


def preprocess_from_checkpoint(state: dict[str, Any], path: Path) -> PreprocessConfig:
    """The crop geometry a checkpoint's model was trained on.

    Raises:
        CnnmrfError: the checkpoint (read from ``path``) records none, or an invalid one.
    """
    if "preprocess" not in state:
        raise CnnmrfError(f"checkpoint {path} records no valid crop geometry (preprocess settings)")
    return preprocess_config_from(state["preprocess"], f"checkpoint {path}")


def load_pose(path: Path) -> tuple[PoseModel, PreprocessConfig]:
    """Load a checkpoint's pose model (on the CPU, in eval mode) and the crop geometry it expects.

    Raises:
        CnnmrfError: a missing, unreadable or foreign checkpoint, or one without crop geometry.
    """
    state = load_checkpoint(path)
    prep = preprocess_from_checkpoint(state, Path(path))
    return model_from_checkpoint(state).eval(), prep


def export_weights(source: Path, target: Path) -> None:
    """Copy a checkpoint without its optimiser and schedule state (what `evaluate` and `predict` need, a third of the
    size); this is how the bundled weights are made from a training run's ``best.pt``.

    Raises:
        CnnmrfError: ``source`` is not a loadable cnnmrf checkpoint with crop geometry.
    """
    state = load_checkpoint(source)
    prep = preprocess_from_checkpoint(state, Path(source))
    model = model_from_checkpoint(state)
    records = {key: state[key] for key in (*RECORD_KEYS, CALIBRATION_KEY) if key in state}
    save_checkpoint(target, checkpoint_state(model, prep, state.get("train_config"), **records))
