"""Checkpoints: one plain dict, written atomically, loaded without ever running code from the file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_path
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.pose import PoseConfig, PoseModel

CHECKPOINT_FORMAT = "cnnmrf-checkpoint-v1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` via a temporary file and a rename, so a crash never leaves a half file."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code is run.

    Raises:
        CnnmrfError: the file is missing, truncated, tampered with, or not a cnnmrf checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnmrfError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnmrfError(f"refusing to load {path}: it holds objects other than weights ({first[:160]})") from err
    except Exception as err:  # garbage bytes fail in many ways: EOFError, BadZipFile, IndexError, KeyError, ...
        raise CnnmrfError(f"{path} is not a readable checkpoint (truncated or corrupt?): {str(err)[:160]}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CnnmrfError(f"{path} is not a cnnmrf checkpoint")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> PoseModel:
    """Rebuild the PoseModel stored in a checkpoint dict and load its weights."""
    try:
        if tuple(state["joint_names"]) != JOINT_NAMES:
            raise CnnmrfError(f"checkpoint joints {state['joint_names']} differ from {list(JOINT_NAMES)}")
        model = PoseModel(PoseConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CnnmrfError(f"checkpoint does not match the model it describes: {str(err)[:200]}") from err
    return model


INFERENCE_KEYS = ("model_config", "preprocess", "joint_names", "train_config", "model", "epoch", "best_pck", "history")


def export_weights(source: Path, target: Path) -> None:
    """Copy a checkpoint without its optimiser and schedule state (what `evaluate` and `predict` need, a third of the
    size); this is how the bundled weights are made from a training run's ``best.pt``."""
    state = load_checkpoint(source)
    save_checkpoint(target, {key: state[key] for key in INFERENCE_KEYS if key in state})
