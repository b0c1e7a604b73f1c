"""Tests for run folders: what training may write where, resuming only the run that is there, and a full disk."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

from cnnmrf import files
from cnnmrf.models.checkpoint import load_checkpoint
from cnnmrf.training import loop
from tests.fixtures import build_tiny_h5
from tests.helpers import assert_one_line_error, invoke, text

FAST = ("--preset", "tiny", "--batch-size", "2", "--max-steps", "1", "--workers", "0", "--device", "cpu")


def train(data: Path, out: Path, *options: str) -> Any:
    """``cnnmrf train-detector DATA --out OUT`` with tiny, fast settings and ``options``."""
    return invoke("train-detector", data, "--out", out, *FAST, *options)


def test_an_out_that_is_a_file_or_holds_someones_results_is_left_alone(tiny_h5: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("my notes")
    assert_one_line_error(train(tiny_h5, tmp_path / "notes.txt", "--epochs", "1"), "notes.txt is a file")
    for name in ("best.pt", "metrics.jsonl"):  # a folder holding only one of a run's files is a run's too
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text("the user's")
        line = assert_one_line_error(train(tiny_h5, folder), f"already holds a run ({name})", "--force")
        assert "no last.pt" in line and "--resume" not in line  # there is nothing to resume: it says so
        line = assert_one_line_error(train(tiny_h5, folder, "--epochs", "2", "--resume"), "no run to continue")
        assert "pass --force instead of --resume" in line
        assert [(p.name, p.read_text()) for p in folder.iterdir()] == [(name, "the user's")]
    assert (tmp_path / "notes.txt").read_text() == "my notes"


def test_what_the_run_folder_errors_advise_works(tiny_h5: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = assert_one_line_error(train(tiny_h5, run, "--epochs", "2", "--resume"), "does not exist", "drop --resume")
    assert "--force" not in line and not run.exists()
    run.mkdir()
    (run / "best.pt").write_text("a run's best.pt without its last.pt")
    assert_one_line_error(train(tiny_h5, run, "--epochs", "1"), "no last.pt", "--force")
    assert train(tiny_h5, run, "--epochs", "1", "--force").exit_code == 0  # --force, as advised, starts afresh
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    assert_one_line_error(train(tiny_h5, run, "--epochs", "2"), "pass --resume to continue it", "--force")
    resumed = train(tiny_h5, run, "--epochs", "2", "--resume")  # --resume, as advised now that there is a last.pt
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_val_fraction_is_the_share_held_out(tiny_h5: Path, tmp_path: Path) -> None:
    result = train(tiny_h5, tmp_path / "half", "--epochs", "1", "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert "validation PCK (4 held-out)" in text(result)  # half of the 8 training crops
    assert load_checkpoint(tmp_path / "half" / "last.pt")["train_config"]["val_fraction"] == 0.5
    line = assert_one_line_error(train(tiny_h5, tmp_path / "all", "--val-fraction", "0.95"), "holds out all 8")
    assert "give a smaller one" in line and not (tmp_path / "all").exists()


def test_resume_takes_the_runs_options_and_refuses_changes_but_the_safe_ones(
    tiny_flic: Path, tiny_h5: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train(tiny_h5, run, "--epochs", "1", "--lr", "0.002").exit_code == 0
    before = (run / "last.pt").read_bytes()
    changed = train(tiny_h5, run, "--resume", "--epochs", "2", "--lr", "0.5", "--loss", "mse", "--seed", "9")
    line = assert_one_line_error(changed, "--lr 0.002 -> 0.5", "--loss ce -> mse", "--seed 0 -> 9", "--force")
    assert "only --workers, --device, --precision, --epochs may change" in line
    assert_one_line_error(train(tiny_h5, run, "--resume", "--epochs", "2", "--optimizer", "sgd"), "--optimizer adam")
    assert_one_line_error(train(tiny_h5, run, "--resume", "--epochs", "2", "--preset", "small"), "--preset tiny")
    other = build_tiny_h5(tiny_flic, tmp_path / "other.h5", limit=9)
    assert_one_line_error(train(other, run, "--resume", "--epochs", "2"), "the dataset", "other.h5")
    assert_one_line_error(train(tiny_h5, run, "--resume"), "has done 1 epoch(s) of 1", "--epochs N with N > 1")
    assert (run / "last.pt").read_bytes() == before  # every refusal left the run as it was
    # Not given again, options are the run's (--lr 0.002); workers, device, precision and epochs may change.
    resumed = invoke("train-detector", tiny_h5, "--out", run, "--resume", "--epochs", "2", "--workers", "1")
    assert resumed.exit_code == 0, resumed.output
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and state["train_config"]["lr"] == 0.002 and state["train_config"]["workers"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_with_too_few_examples_to_hold_any_out_best_pt_is_the_last_epochs(tiny_flic: Path, tmp_path: Path) -> None:
    data = build_tiny_h5(tiny_flic, tmp_path / "four.h5", limit=4)  # 3 training examples: none held out
    result = train(data, tmp_path / "run", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "done:" in text(result) and "no validation examples" in text(result) and "nan" not in text(result)
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["epoch"] == last["epoch"] == 1


def test_a_nan_loss_before_any_checkpoint_says_none_was_written(
    tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(loop.LOSSES, "ce", lambda *args, **kwargs: torch.tensor(float("nan")))
    line = assert_one_line_error(train(tiny_h5, tmp_path / "run", "--epochs", "1"), "the loss became nan")
    assert "no checkpoint was written" in line and "kept" not in line
    assert not (tmp_path / "run").exists()  # the run created its folder and wrote nothing: it is gone again


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_run(
    tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    assert train(tiny_h5, run, "--epochs", "1").exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    result = train(tiny_h5, run, "--epochs", "1", "--force")
    assert_one_line_error(result, f"cannot write {run / 'best.pt'}: the disk is full")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert_one_line_error(train(tiny_h5, tmp_path / "new", "--epochs", "1"), "the disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_runs_files_get_the_permissions_the_umask_gives(tiny_h5: Path, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        assert train(tiny_h5, tmp_path / "run", "--epochs", "1").exit_code == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert modes == {"last.pt": 0o640, "best.pt": 0o640, "metrics.jsonl": 0o640}
