"""Tests for the training loop and the three train commands: learning, resuming, guards (torchrun: test_torchrun)."""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import cnnmrf.training.loop as loop
from cnnmrf.cli.train import train_detector, train_joint, train_mrf
from cnnmrf.data.dataset import AugmentConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.pck import evaluate_pck
from cnnmrf.inference.crops import final_joints, predict_rows
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.losses import spatial_softmax_cross_entropy
from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint
from cnnmrf.models.pose import PoseModel
from cnnmrf.training.config import STAGE_DEFAULTS, Loss, Stage, TrainConfig
from cnnmrf.training.optim import stage_loss
from tests.helpers import assert_one_line_error, invoke, text

NO_AUGMENT = AugmentConfig(scale=0.0, rotation=0.0, shift=0.0, flip=0.0, color=0.0)
CHECKPOINT_KEYS = {
    "format",
    "model_config",
    "preprocess",
    "joint_names",
    "train_config",
    "model",
    "optimizer",
    "scheduler",
    "epoch",
    "best_pck",
    "history",
    "rng",
    "run",
}
METRIC_KEYS = {"epoch", "train_loss", "val_pck@0.2", "lr", "seconds", "images_per_s", "data_wait_fraction", "precision"}
PCK_GROUPS = {"wrist", "elbow", "shoulder", "hip", "mean"}


def tiny(**overrides: Any) -> TrainConfig:
    """A fast TrainConfig: tiny preset, one process, no workers, short warmup."""
    base = TrainConfig(preset="tiny", epochs=1, batch_size=2, workers=0, device="cpu", warmup_steps=2)
    return replace(base, **overrides)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def mean_pck(model: PoseModel, data: Path, rows: np.ndarray) -> float:
    pred = final_joints(predict_rows(model, data, "train", rows)).joints
    with h5py.File(data, "r") as h5:
        truth = h5["train"]["joints"][:][rows]
    return evaluate_pck(pred, truth).at("mean", 0.2)


def test_loss_falls(tiny_h5: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    run = tmp_path / "run"
    metrics = loop.train(tiny(epochs=10, batch_size=4, lr=3e-3), tiny_h5, run)
    history = read_metrics(run)
    assert [m["epoch"] for m in history] == list(range(1, 11))
    assert metrics == history[-1]
    losses = [m["train_loss"] for m in history]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
    assert history[-1]["lr"] < history[1]["lr"]  # cosine decay after the warmup


def test_overfits_eight_examples(tiny_h5: Path, tmp_path: Path) -> None:
    """Without augmentation the tiny detector learns the 8 training crops to PCK@0.2 >= 0.9."""
    torch.manual_seed(0)
    run = tmp_path / "run"
    config = tiny(
        epochs=80, batch_size=4, lr=3e-3, warmup_steps=5, weight_decay=0.0, val_fraction=0.0, augment=NO_AUGMENT
    )
    loop.train(config, tiny_h5, run)
    model = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    rows = np.arange(8)
    assert mean_pck(model, tiny_h5, rows) >= 0.9  # measured 0.96-0.99 over seeds (one wrist lies outside its crop)
    # Sanity: an untrained model of the same architecture is far from it.
    torch.manual_seed(1)
    assert mean_pck(PoseModel(model.config), tiny_h5, rows) < 0.5


def test_the_loop_reports_its_progress_and_prints_nothing(
    tiny_h5: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports: list[loop.TrainProgress] = []
    loop.train(tiny(epochs=2, max_steps_per_epoch=2), tiny_h5, tmp_path / "run", on_progress=reports.append)
    assert capsys.readouterr() == ("", "")
    ends = [False, False, False, True]
    assert [(r.epoch, r.step, r.validation is not None) for r in reports] == [
        (epoch, step, end) for epoch in (1, 2) for step, end in zip((0, 1, 2, 2), ends)
    ]
    assert all(r.epochs == 2 and r.steps == 2 and r.precision == reports[0].precision for r in reports)
    history = read_metrics(tmp_path / "run")
    for report, metrics in zip([r for r in reports if r.validation is not None], history):
        assert report.loss == metrics["train_loss"] and report.num_validation == 1  # 10% of the 8 training crops
        assert 100 * report.validation.at("mean", 0.2) == metrics["val_pck@0.2"]["mean"]


def test_resume_matches_an_uninterrupted_run(tiny_h5: Path, tmp_path: Path) -> None:
    config = tiny(epochs=3, max_steps_per_epoch=2, warmup_steps=2)  # with the default augmentations
    states: dict[int, dict[str, torch.Tensor]] = {}

    def remember(epoch: int, model: PoseModel) -> None:
        states[epoch] = copy.deepcopy(model.state_dict())

    loop.train(config, tiny_h5, tmp_path / "a", on_epoch_end=remember)

    def interrupt_after_two(epoch: int, model: PoseModel) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tiny_h5, tmp_path / "b", on_epoch_end=interrupt_after_two)
    interrupted = load_checkpoint(tmp_path / "b" / "last.pt")
    assert interrupted["epoch"] == 1 and len(read_metrics(tmp_path / "b")) == 2
    for name, tensor in states[2].items():
        assert torch.equal(interrupted["model"][name], tensor), name
    assert not all(torch.equal(states[2][n], t) for n, t in states[3].items())  # epoch 3 still changes weights

    loop.train(config, tiny_h5, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert set(a["model"]) == set(b["model"])
    for name, tensor in a["model"].items():
        assert torch.equal(b["model"][name], tensor), f"{name} differs after resuming"
    for key, state in a["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(b["optimizer"]["state"][key][field]), torch.as_tensor(value))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    losses_a = [m["train_loss"] for m in read_metrics(tmp_path / "a")]
    assert [m["train_loss"] for m in read_metrics(tmp_path / "b")] == losses_a
    assert [m["train_loss"] for m in b["history"]] == losses_a


def test_nan_loss_stops_with_a_clear_error(tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.LOSSES["ce"]
    calls = {"n": 0}

    def nan_on_third_call(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setitem(loop.LOSSES, "ce", nan_on_third_call)
    run = tmp_path / "run"
    with pytest.raises(CnnmrfError, match=r"the loss became nan at epoch 2, step 1; stopped") as info:
        loop.train(tiny(epochs=3, max_steps_per_epoch=2), tiny_h5, run)
    assert str(run) in str(info.value) and "--lr" in str(info.value)
    state = load_checkpoint(run / "last.pt")  # the previous epoch's checkpoint is intact
    assert state["epoch"] == 0
    model = model_from_checkpoint(state)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(read_metrics(run)) == 1


def test_existing_run_needs_resume_or_force(tiny_h5: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny(max_steps_per_epoch=1)
    with pytest.raises(CnnmrfError, match="does not exist"):
        loop.train(config, tiny_h5, run, resume=True)  # nothing to resume
    loop.train(config, tiny_h5, run)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(CnnmrfError, match="already holds a run"):
        loop.train(config, tiny_h5, run)
    assert (run / "last.pt").read_bytes() == before
    with pytest.raises(CnnmrfError, match="contradict"):
        loop.train(config, tiny_h5, run, resume=True, force=True)
    loop.train(config, tiny_h5, run, force=True)
    assert len(read_metrics(run)) == 1  # the old metrics were discarded, not appended to
    done = (run / "last.pt").read_bytes()  # resuming a finished run is refused (no epoch left) and keeps it
    with pytest.raises(CnnmrfError, match=r"has done 1 epoch\(s\) of 1; pass --epochs N with N > 1"):
        loop.train(config, tiny_h5, run, resume=True)
    assert (run / "last.pt").read_bytes() == done


def test_bad_options_are_refused_naming_the_option(tiny_h5: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnmrfError, match="needs --detector"):
        loop.train(tiny(stage="mrf"), tiny_h5, tmp_path / "run")
    for overrides, message in (
        ({"loss": "l1"}, "--loss must be one of ce, mse, not 'l1'"),
        ({"preset": "huge"}, "--preset must be one of small, small-hr, paper, tiny, not 'huge'"),
        ({"optimizer": "lbfgs"}, "--optimizer must be one of adam, sgd"),
        ({"device": "tpu"}, "--device must be one of auto, cpu, cuda"),
        ({"stage": "all"}, "stage must be one of detector, mrf, joint"),
        ({"schedule": "step"}, "schedule must be one of cosine, constant"),
        ({"val_fraction": float("nan")}, "--val-fraction must be at least 0 and below 1, not nan"),
        ({"val_fraction": 1.0}, "--val-fraction must be at least 0 and below 1, not 1.0"),
        ({"seed": -1}, "--seed must be at least 0, not -1"),
    ):
        with pytest.raises(CnnmrfError, match=message):
            tiny(**overrides)
    config = tiny()
    config.loss = "l1"  # set after construction: the loop checks again
    with pytest.raises(CnnmrfError, match="--loss"):
        loop.train(config, tiny_h5, tmp_path / "run")
    with pytest.raises(CnnmrfError, match="does not exist"):
        loop.train(tiny(), tmp_path / "missing.h5", tmp_path / "run2")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_each_stage_has_its_defaults_in_the_config_and_the_cli_shows_them() -> None:
    for stage, command in ((Stage.detector, train_detector), (Stage.mrf, train_mrf), (Stage.joint, train_joint)):
        config = TrainConfig(stage=stage.value)
        assert (config.epochs, config.lr) == (STAGE_DEFAULTS[stage].epochs, STAGE_DEFAULTS[stage].lr)
        defaults = {name: p.default for name, p in inspect.signature(command).parameters.items()}
        assert defaults["epochs"] == config.epochs and defaults.get("lr", config.lr) == config.lr
    joint = TrainConfig(stage="joint")
    assert (joint.epochs, joint.lr) == (10, 5e-4) and joint.stage is Stage.joint and joint.loss is Loss.ce
    assert TrainConfig(stage="joint", epochs=2, lr=0.1).epochs == 2  # given values win


def test_cli_lists_the_choices_and_refuses_others(
    tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the help is drawn that wide: no choice list is wrapped
    help_text = invoke("train-joint", "--help").output
    for choices in ("<small|small-hr|paper|tiny>", "<adam|sgd>", "<ce|mse>", "<auto|cpu|cuda>", "<auto|fp32|bf16>"):
        assert choices in help_text, choices
    result = invoke("train-detector", tiny_h5, "--out", tmp_path / "run", "--loss", "l1")
    assert result.exit_code == 2 and "'l1' is not one of" in text(result)
    assert not (tmp_path / "run").exists()


# Numbers each train command refuses at parse time: click's ranges let NaN and inf through, and a seed or share out of
# range used to end in a traceback (or, --val-fraction 2 and -0.5, in a run that validated on the wrong rows).
OUT_OF_RANGE = [
    ("train-detector", "--seed", "-1"),
    ("train-detector", "--seed", str(2**32)),
    ("train-detector", "--val-fraction", "nan"),
    ("train-detector", "--val-fraction", "2"),
    ("train-detector", "--val-fraction", "-0.5"),
    ("train-detector", "--val-fraction", "1"),
    ("train-detector", "--lr", "nan"),
    ("train-detector", "--lr", "inf"),
    ("train-detector", "--lr", "-1"),
    ("train-mrf", "--spatial-lr", "nan"),
    ("train-mrf", "--seed", "-5"),
    ("train-joint", "--lr", "inf"),
    ("train-joint", "--spatial-lr", "inf"),
    ("train-joint", "--detector-loss-weight", "nan"),
    ("train-joint", "--val-fraction", "nan"),
]


@pytest.mark.parametrize(("command", "option", "value"), OUT_OF_RANGE)
def test_cli_refuses_out_of_range_numbers_as_usage_errors(
    command: str, option: str, value: str, tiny_h5: Path, tmp_path: Path
) -> None:
    result = invoke(command, tiny_h5, "--out", tmp_path / "run", option, value)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and f"Invalid value for '{option}'" in text(result)
    assert not (tmp_path / "run").exists()


def check_run(run: Path, stage: str) -> dict[str, Any]:
    """The run folder holds last.pt, best.pt and metrics.jsonl with the documented keys; returns last.pt."""
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    history = read_metrics(run)
    assert len(history) == 1 and set(history[0]) == METRIC_KEYS
    assert set(history[0]["val_pck@0.2"]) == PCK_GROUPS
    assert all(0 <= v <= 100 for v in history[0]["val_pck@0.2"].values())
    state = load_checkpoint(run / "last.pt")
    assert set(state) == CHECKPOINT_KEYS
    assert state["train_config"]["stage"] == stage and state["joint_names"] == list(JOINT_NAMES)
    assert state["history"] == history and state["epoch"] == 0
    assert state["preprocess"]["input_size"] == 64
    json.dumps({k: state[k] for k in ("model_config", "preprocess", "train_config", "history")})  # plain data
    assert set(load_checkpoint(run / "best.pt")) == CHECKPOINT_KEYS
    return state


def test_stage_loss_weights_the_detector_term_only_in_joint_training() -> None:
    torch.manual_seed(0)
    out = {"detector": torch.randn(2, 10, 8, 8), "spatial": torch.randn(2, 10, 8, 8)}
    target, visible = torch.rand(2, 10, 8, 8), torch.ones(2, 10, dtype=torch.bool)
    fn = spatial_softmax_cross_entropy
    det, spatial = fn(out["detector"], target, visible), fn(out["spatial"], target, visible)
    assert torch.allclose(stage_loss(tiny(stage="detector"), fn, out, target, visible), det)
    assert torch.allclose(stage_loss(tiny(stage="mrf", detector_loss_weight=1.0), fn, out, target, visible), spatial)
    assert torch.allclose(stage_loss(tiny(stage="joint", detector_loss_weight=0.0), fn, out, target, visible), spatial)
    assert torch.allclose(
        stage_loss(tiny(stage="joint", detector_loss_weight=0.5), fn, out, target, visible), spatial + 0.5 * det
    )


def test_cli_trains_the_three_stages_in_turn(tiny_h5: Path, tmp_path: Path) -> None:
    common = ["--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--max-steps", "2"]
    det, mrf, joint = tmp_path / "det", tmp_path / "mrf", tmp_path / "joint"

    result = invoke("train-detector", tiny_h5, "--out", det, "--preset", "tiny", *common)
    assert result.exit_code == 0, result.output
    assert "done:" in result.output
    detector_state = check_run(det, "detector")
    assert detector_state["model_config"]["spatial"] is None

    result = invoke("train-mrf", tiny_h5, "--out", mrf, *common)
    assert_one_line_error(result, "needs --detector")
    assert not (mrf / "last.pt").exists()

    result = invoke("train-mrf", tiny_h5, "--detector", det / "best.pt", "--out", mrf, *common)
    assert result.exit_code == 0, result.output
    mrf_state = check_run(mrf, "mrf")
    assert tuple(mrf_state["model_config"]["spatial"]["heatmap_size"]) == (16, 16)
    for name, tensor in detector_state["model"].items():  # the detector is frozen, BatchNorm statistics included
        assert torch.equal(mrf_state["model"][name], tensor), name

    result = invoke(
        "train-joint", tiny_h5, "--mrf", mrf / "best.pt", "--out", joint, "--detector-loss-weight", "0.5", *common
    )
    assert result.exit_code == 0, result.output
    joint_state = check_run(joint, "joint")
    assert joint_state["train_config"]["detector_loss_weight"] == 0.5
    changed = [n for n, t in joint_state["model"].items() if not torch.equal(t, mrf_state["model"][n])]
    assert any(n.startswith("detector.") for n in changed) and any(n.startswith("spatial.") for n in changed)
    assert model_from_checkpoint(joint_state).spatial is not None

    # A second train-detector into the same folder is refused with a one-line error.
    result = invoke("train-detector", tiny_h5, "--out", det, "--preset", "tiny", *common)
    assert_one_line_error(result, "already holds a run")

    # train-detector --init fine-tunes the detector of any checkpoint (here the joint one); at lr 0 its convolution
    # weights stay exactly those it started from.
    tuned = tmp_path / "tuned"
    result = invoke("train-detector", tiny_h5, "--out", tuned, "--init", joint / "best.pt", "--lr", "0", *common)
    assert result.exit_code == 0, result.output
    tuned_state = check_run(tuned, "detector")
    assert tuned_state["model_config"]["spatial"] is None
    for name, tensor in tuned_state["model"].items():
        if name.endswith("weight"):
            assert torch.equal(tensor, joint_state["model"][name]), name
    result = invoke("train-detector", tiny_h5, "--out", tmp_path / "none", "--init", tmp_path / "missing.pt", *common)
    assert_one_line_error(result, "missing.pt")
