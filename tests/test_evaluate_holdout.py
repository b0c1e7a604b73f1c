"""Tests that `evaluate --split val` (and `calibrate`, in tests/test_calibrate.py) hold out the checkpoint's own
validation rows: its training run's --val-fraction and --seed, unless others are forced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.format import PreprocessConfig, open_dataset
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.holdout import HoldOut, resolve_holdout
from cnnmrf.models.checkpoint import checkpoint_state, save_checkpoint
from tests.fixtures import tiny_model, write_tiny_checkpoint
from tests.helpers import assert_one_line_error, invoke, text

HERE = Path("run/best.pt")


def trained_checkpoint(path: Path, prep: PreprocessConfig, **train_config: Any) -> Path:
    """A tiny checkpoint for ``prep``'s geometry that records a training run's config (``val_fraction``, ``seed``)."""
    save_checkpoint(path, checkpoint_state(tiny_model(prep.input_size), prep, train_config))
    return path


@pytest.fixture(scope="module")
def seed3(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained with --val-fraction 0.25 --seed 3 (its validation rows: 6 and 7 of the 8)."""
    return trained_checkpoint(tmp_path_factory.mktemp("ckpt") / "seed3.pt", tiny_config, val_fraction=0.25, seed=3)


@pytest.fixture(scope="module")
def hand_made(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that records no training config."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "hand.pt", tiny_config)


def scored_indices(out: Path) -> list[int]:
    """The FLIC indices of the examples an evaluation in ``out`` scored."""
    return [example["index"] for example in json.loads((out / "predictions.json").read_text())["examples"]]


def train_indices(tiny_h5: Path, rows: Any) -> list[int]:
    """The FLIC indices of rows of the training split."""
    with open_dataset(tiny_h5) as dataset:
        return [int(i) for i in dataset.read("train", ("index",), rows)["index"]]


def test_resolve_holdout_takes_the_checkpoints_values_and_refuses_others() -> None:
    stored = {"val_fraction": 0.25, "seed": 3}
    assert resolve_holdout(stored, None, None, False, HERE) == (HoldOut(0.25, 3, "checkpoint"), None)
    assert resolve_holdout(stored, 0.25, 3, False, HERE) == (HoldOut(0.25, 3, "checkpoint"), None)  # the same: fine
    with pytest.raises(CnnmrfError) as refused:
        resolve_holdout(stored, None, 0, False, HERE)
    assert str(refused.value) == (
        "--seed 0 differs from the checkpoint's training seed 3 (its validation rows would include rows it trained "
        "on); pass --force to use it anyway"
    )
    with pytest.raises(CnnmrfError, match=r"--val-fraction 0.1 differs .* 0.25; --seed 0 differs .* use them anyway"):
        resolve_holdout(stored, 0.1, 0, False, HERE)
    assert resolve_holdout(stored, None, 0, True, HERE) == (HoldOut(0.25, 0, "forced"), None)


@pytest.mark.parametrize(
    "config",
    [None, {}, {"seed": True, "val_fraction": float("nan")}, {"seed": -1, "val_fraction": 1.5}, {"seed": "3"}],
    ids=["none", "empty", "bool-nan", "out-of-range", "string"],
)
def test_resolve_holdout_without_usable_training_config_takes_the_defaults_with_a_note(config: Any) -> None:
    holdout, note = resolve_holdout(config, None, None, False, HERE)
    assert holdout == HoldOut(0.1, 0, "defaults")
    assert note is not None and str(HERE) in note and "--val-fraction and --seed" in note
    # given values cannot be checked against anything: used as given, without a note
    assert resolve_holdout(config, 0.5, 2, False, HERE) == (HoldOut(0.5, 2, "given"), None)
    holdout, note = resolve_holdout({"val_fraction": 0.2}, None, None, False, HERE)  # a partial record
    assert holdout == HoldOut(0.2, 0, "defaults") and note is not None and "no training seed" in note


def test_split_val_holds_out_the_checkpoints_validation_rows(tiny_h5: Path, seed3: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", tiny_h5, "-c", seed3, "--out", tmp_path / "a", "--split", "val")
    assert result.exit_code == 0, result.output
    assert "held out by val_fraction 0.25, seed 3 (the checkpoint's training run)" in text(result)
    options = json.loads((tmp_path / "a" / "metrics.json").read_text())["options"]
    assert (options["val_fraction"], options["seed"], options["held_out_from"]) == (0.25, 3, "checkpoint")
    rows = holdout_rows(8, 0.25, 3)[1]
    assert set(rows) != set(holdout_rows(8, 0.25, 0)[1])  # the old default seed would score other rows
    assert scored_indices(tmp_path / "a") == train_indices(tiny_h5, rows)
    # the checkpoint's own values, given, need no --force
    result = invoke("evaluate", tiny_h5, "-c", seed3, "-o", tmp_path / "b", "--split", "val", "--seed", "3")
    assert result.exit_code == 0, result.output


def test_split_val_refuses_other_held_out_rows_unless_forced(tiny_h5: Path, seed3: Path, tmp_path: Path) -> None:
    args = ("evaluate", tiny_h5, "-c", seed3, "--out", tmp_path / "e", "--split", "val")
    assert_one_line_error(
        invoke(*args, "--seed", "0"),
        "--seed 0 differs from the checkpoint's training seed 3 (its validation rows would include rows it trained "
        "on); pass --force to use it anyway",
    )
    line = assert_one_line_error(invoke(*args, "--val-fraction", "0.5", "--seed", "1"), "use them anyway")
    assert "--val-fraction 0.5 differs from the checkpoint's training val_fraction 0.25" in line
    assert not (tmp_path / "e").exists()
    result = invoke(*args, "--seed", "0", "--force")
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "e" / "metrics.json").read_text())["options"]
    assert (options["val_fraction"], options["seed"], options["held_out_from"]) == (0.25, 0, "forced")
    assert scored_indices(tmp_path / "e") == train_indices(tiny_h5, holdout_rows(8, 0.25, 0)[1])
    # the test split uses no held-out rows: nothing to refuse
    result = invoke("evaluate", tiny_h5, "-c", seed3, "--out", tmp_path / "t", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["options"]["held_out_from"] is None


def test_split_val_of_a_checkpoint_without_training_config_takes_the_defaults_with_a_note(
    tiny_h5: Path, hand_made: Path, tmp_path: Path
) -> None:
    result = invoke("evaluate", tiny_h5, "-c", hand_made, "--out", tmp_path, "--split", "val")
    assert result.exit_code == 0, result.output
    assert f"note: checkpoint {hand_made} records no training val_fraction or seed" in text(result)
    options = json.loads((tmp_path / "metrics.json").read_text())["options"]
    assert (options["val_fraction"], options["seed"], options["held_out_from"]) == (0.1, 0, "defaults")
    assert scored_indices(tmp_path) == train_indices(tiny_h5, holdout_rows(8, 0.1, 0)[1])


@pytest.mark.parametrize(
    "option, value",
    [
        ("--val-fraction", "nan"),
        ("--val-fraction", "2"),
        ("--val-fraction", "-0.5"),
        ("--val-fraction", "1"),
        ("--seed", "-1"),
        ("--batch-size", "0"),
        ("--limit", "0"),
    ],
)
def test_evaluate_numeric_options_out_of_range_are_usage_errors(
    tiny_h5: Path, hand_made: Path, tmp_path: Path, option: str, value: str
) -> None:
    result = invoke("evaluate", tiny_h5, "-c", hand_made, "--out", tmp_path / "e", "--split", "val", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in text(result) and "Traceback" not in result.output
    assert not (tmp_path / "e").exists()
