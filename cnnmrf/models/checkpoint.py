"""Checkpoints: one plain dict built in one place, written atomically, loaded without running code from the file."""

from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_path
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.pose import PoseConfig, PoseModel

CHECKPOINT_FORMAT = "cnnmrf-checkpoint-v1"
RECORD_KEYS = ("epoch", "best_pck", "history")  # what a training run records about itself
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
    """Rebuild the PoseModel stored in a checkpoint dict and load its weights.

    Raises:
        CnnmrfError: other joints than :data:`cnnmrf.joints.JOINT_NAMES`, or weights that do not fit the config.
    """
    try:
        if tuple(state["joint_names"]) != JOINT_NAMES:
            raise CnnmrfError(f"checkpoint joints {state['joint_names']} differ from {list(JOINT_NAMES)}")
        model = PoseModel(PoseConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CnnmrfError(f"checkpoint does not match the model it describes: {str(err)[:200]}") from err
    return model


def preprocess_from_checkpoint(state: dict[str, Any], path: Path) -> PreprocessConfig:
    """The crop geometry a checkpoint's model was trained on.

    Raises:
        CnnmrfError: the checkpoint (read from ``path``) records none, or an invalid one.
    """
    try:
        return PreprocessConfig(**state["preprocess"])
    except (KeyError, TypeError) as err:
        raise CnnmrfError(f"checkpoint {path} records no valid crop geometry (preprocess settings)") from err


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
    records = {key: state[key] for key in RECORD_KEYS if key in state}
    save_checkpoint(target, checkpoint_state(model, prep, state.get("train_config"), **records))
