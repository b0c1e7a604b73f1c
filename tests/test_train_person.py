"""Tests for `cnnmrf train-person`: a short run on the tiny FLIC copy, resuming it, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnnmrf.data.flic import FlicSource
from cnnmrf.data.person_frames import train_val_frames
from cnnmrf.errors import CnnmrfError
from cnnmrf.models.person import load_person_checkpoint, person_detector_from
from cnnmrf.training.person import train_person
from cnnmrf.training.person_config import PersonTrainConfig
from tests.helpers import assert_one_line_error, invoke

# A run small enough for a test: the tiny preset on 64 px images, whole frames validated at 64 px.
FAST = ("--preset", "tiny", "--batch-size", "4", "--input-size", "64", "--val-long-side", "64", "--workers", "0")


@pytest.fixture(scope="module")
def person_run(tiny_flic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run folder of the tiny FLIC copy. Shared: don't modify."""
    out = tmp_path_factory.mktemp("person") / "run"
    result = invoke("train-person", tiny_flic, "--out", out, "--epochs", "1", "--val-fraction", "0.25", *FAST)
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "done:" in result.output
    return out


def test_one_epoch_writes_checkpoints_and_metrics(person_run: Path, tiny_flic: Path) -> None:
    assert sorted(p.name for p in person_run.iterdir() if not p.name.startswith(".")) == [
        "best.pt",
        "last.pt",
        "metrics.jsonl",
    ]
    lines = (person_run / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(lines[0])
    assert len(lines) == 1 and metrics["epoch"] == 1 and set(metrics["val_recall"]) == {"@1", "@3", "@5"}
    # Every annotated person of the frames where the 2 held-out people are (frames may hold two).
    val_frames = train_val_frames(FlicSource(tiny_flic), 0.25, 0)[1]
    assert metrics["val_people"] == sum(len(f.boxes) for f in val_frames) == 4
    state = load_person_checkpoint(person_run / "best.pt")
    assert state["train_config"]["preset"] == "tiny" and state["epoch"] == 0
    assert person_detector_from(state).config.widths == (8, 8, 8, 8)


def test_resume_continues_the_run_and_refuses_other_options(person_run: Path, tiny_flic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pt", "best.pt", "metrics.jsonl"):
        (out / name).write_bytes((person_run / name).read_bytes())
    changed = invoke("train-person", tiny_flic, "--out", out, "--resume", "--epochs", "2", "--lr", "0.5")
    assert_one_line_error(changed, "--lr 0.002 -> 0.5", "--force")
    done = invoke("train-person", tiny_flic, "--out", out, "--resume", "--epochs", "2")
    assert done.exit_code == 0, done.output
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    best = load_person_checkpoint(out / "best.pt")  # the summary names best.pt's epoch and recall, not the last's
    assert f"(epoch {best['epoch'] + 1}, validation recall@3 {best['best_recall']:.1f})" in " ".join(
        done.output.split()
    )
    again = invoke("train-person", tiny_flic, "--out", out, "--resume", "--epochs", "2")
    assert_one_line_error(again, "has done 2 of 2 epochs")


def test_an_existing_run_needs_resume_or_force(person_run: Path, tiny_flic: Path) -> None:
    assert_one_line_error(invoke("train-person", tiny_flic, "--out", person_run, *FAST), "already holds a run")
    both = invoke("train-person", tiny_flic, "--out", person_run, "--resume", "--force")
    assert_one_line_error(both, "contradict")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--input-size", "48"), "multiple of 32"),
        (("--far-weight", "2"), ""),
    ],
    ids=["input-size", "far-weight"],
)
def test_bad_options_are_refused(tiny_flic: Path, tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    result = invoke("train-person", tiny_flic, "--out", tmp_path / "run", *args)
    if fragment:
        assert_one_line_error(result, fragment)
    else:  # a typer range check: a usage error
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_missing_flic_is_one_line(tmp_path: Path) -> None:
    result = invoke("train-person", tmp_path / "nowhere", "--out", tmp_path / "run", *FAST)
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "run").exists()


def test_no_training_frames_is_one_line(tiny_flic: Path, tmp_path: Path) -> None:
    config = PersonTrainConfig(preset="tiny", epochs=1, input_size=64, val_long_side=64, val_fraction=0.99, workers=0)
    with pytest.raises(CnnmrfError, match="leaves no training frames"):
        train_person(config, tiny_flic, tmp_path / "run")


def test_a_missing_frame_is_one_line_naming_it(tiny_flic: Path, tmp_path: Path) -> None:
    copy = tmp_path / "FLIC"
    shutil.copytree(tiny_flic, copy)
    missing = sorted((copy / "images").iterdir())[1]
    missing.unlink()
    result = invoke("train-person", copy, "--out", tmp_path / "run", "--epochs", "1", *FAST)
    assert_one_line_error(result, missing.name, "does not exist")
