"""Which rows of the training split a checkpoint never trained on: its training run's held-out share and seed.

`evaluate --split val` and `calibrate` measure on those rows. They take ``val_fraction`` and ``seed`` from the
checkpoint's stored training config (:class:`cnnmrf.training.config.TrainConfig`), so that a run trained with
``--seed 3`` is never measured on rows it trained on; other values are refused unless forced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnmrf.errors import CnnmrfError

DEFAULT_VAL_FRACTION = 0.1  # TrainConfig's default: assumed when a checkpoint records no training config
DEFAULT_SEED = 0  # TrainConfig's default: assumed likewise


@dataclass(frozen=True)
class HoldOut:
    """The held-out rows' parameters (as given to :func:`cnnmrf.data.dataset.holdout_rows`) and where they came from."""

    val_fraction: float  # the share of the training split held out
    seed: int  # the seed that drew them
    # "checkpoint" (its training config), "defaults" (assumed: it records none), "given" (it records none to check them
    # against) or "forced" (others than it records, with --force)
    source: str

    def describe(self) -> str:
        """E.g. ``val_fraction 0.1, seed 3 (the checkpoint's training run)``."""
        origin = {
            "checkpoint": "the checkpoint's training run",
            "defaults": "the training defaults: the checkpoint records no training config",
            "given": "as given: the checkpoint records no training config",
            "forced": "given with --force, unlike the checkpoint's training run",
        }[self.source]
        return f"val_fraction {self.val_fraction:g}, seed {self.seed} ({origin})"


def _stored_fraction(value: Any) -> float | None:
    """A recorded ``val_fraction`` if it is a valid share, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value < 1
    return float(value) if ok else None


def _stored_seed(value: Any) -> int | None:
    """A recorded ``seed`` if it is a valid seed, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def resolve_holdout(
    train_config: Mapping[str, Any] | None,
    val_fraction: float | None,
    seed: int | None,
    force: bool,
    checkpoint: Path,
) -> tuple[HoldOut, str | None]:
    """The held-out share and seed to use: the checkpoint's unless others are given and forced.

    Args:
        train_config: the checkpoint's ``train_config`` entry (None or ``{}``: a checkpoint made by hand).
        val_fraction: ``--val-fraction`` (None: the checkpoint's).
        seed: ``--seed`` (None: the checkpoint's).
        force: use given values that differ from the checkpoint's.
        checkpoint: the checkpoint's path (for the note).

    Returns:
        The held-out parameters, and a note to show when a value had to be assumed (None otherwise).

    Raises:
        CnnmrfError: a given value differs from the checkpoint's and not ``force``.
    """
    config = train_config or {}
    stored = {"val_fraction": _stored_fraction(config.get("val_fraction")), "seed": _stored_seed(config.get("seed"))}
    given = {"val_fraction": val_fraction, "seed": seed}
    flags = {"val_fraction": "--val-fraction", "seed": "--seed"}
    differing = [
        f"{flags[key]} {given[key]:g} differs from the checkpoint's training {key} {stored[key]:g}"
        for key in given
        if given[key] is not None and stored[key] is not None and given[key] != stored[key]
    ]
    if differing and not force:
        raise CnnmrfError(
            f"{'; '.join(differing)} (its validation rows would include rows it trained on); pass --force to use "
            f"{'it' if len(differing) == 1 else 'them'} anyway"
        )
    defaults = {"val_fraction": DEFAULT_VAL_FRACTION, "seed": DEFAULT_SEED}
    assumed = [key for key in given if given[key] is None and stored[key] is None]
    values = {key: given[key] if given[key] is not None else stored[key] for key in given}
    values = {key: defaults[key] if value is None else value for key, value in values.items()}
    unchecked = any(given[key] is not None and stored[key] is None for key in given)
    source = "forced" if differing else "defaults" if assumed else "given" if unchecked else "checkpoint"
    note = None
    if assumed:
        taken = " and ".join(f"{key} {values[key]:g}" for key in assumed)
        note = (
            f"note: checkpoint {checkpoint} records no training {' or '.join(assumed)}: taking the training default "
            f"{taken}; give the run's {' and '.join(flags[key] for key in assumed)} if it used others"
        )
    return HoldOut(float(values["val_fraction"]), int(values["seed"]), source), note
