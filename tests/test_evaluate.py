"""Tests for `cnnmrf evaluate`: outputs, re-scoring, refusal to overwrite, switches and one-line failures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.evaluate import parse_scales
from cnnmrf.data.dataset import holdout_rows
from cnnmrf.data.format import PreprocessConfig, open_dataset
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation import evaluate
from cnnmrf.evaluation.pck import PCKResult, evaluate_pck
from cnnmrf.evaluation.report import load_predictions
from tests.fixtures import write_tiny_checkpoint
from tests.helpers import assert_one_line_error, invoke

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_evaluate_writes_metrics_plot_and_predictions(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = invoke("evaluate", tiny_h5, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "observer-centric" in result.output and "r=0.2" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "pck",
        "groups",
        "curve",
        "num_examples",
        "detector",
        "full",
        "headline",
        "checkpoint",
        "dataset",
        "options",
        "num_split_examples",
        "seconds",
        "observer_centric",
    ):
        assert key in metrics, key
    assert metrics["headline"] == "full" and metrics["observer_centric"] is True
    assert metrics["pck"] == metrics["full"]["pck"] and metrics["detector"]["num_examples"] == 4
    assert len(metrics["curve"]["thresholds"]) == 50
    assert (out / "pck.png").read_bytes()[:8] == PNG_SIGNATURE

    indices, files, joints, scores = load_predictions(out / "predictions.json")
    with h5py.File(tiny_h5, "r") as h5:
        test = h5["test"]
        assert indices.tolist() == test["index"][:].tolist()
        assert files == list(test["file"].asstr()[:])
        truth = test["joints"][:]
    assert joints.shape == (4, 10, 2) and np.isfinite(scores).all()
    rescored = evaluate_pck(joints, truth).to_dict()
    assert rescored["pck"] == metrics["pck"] and rescored["groups"] == metrics["groups"]
    assert PCKResult.from_dict(metrics).num_examples == 4


def test_evaluate_refuses_to_overwrite_without_force(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = invoke("evaluate", tiny_h5, "--checkpoint", checkpoint, "--out", out, "--limit", "1")
    assert_one_line_error(result, "--force")
    assert (out / "metrics.json").read_text() == "{}"
    result = invoke("evaluate", tiny_h5, "--checkpoint", checkpoint, "--out", out, "--limit", "1", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 1


def test_two_evaluates_into_one_folder_at_once_one_is_refused(
    tiny_h5: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second evaluate starts while the first is predicting, past its checks (no outputs yet): it is refused at
    once with one line, and the first's outputs are written whole, not replaced by the second's."""
    out = tmp_path / "eval"
    real, second = evaluate.predict_rows, {}

    def predict_while_another_starts(*args: object, **kwargs: object) -> object:
        if "result" not in second:
            second["result"] = None  # once: the second's own predictions (if it got that far) run as they are
            second["result"] = invoke("evaluate", tiny_h5, "-c", checkpoint, "--out", out, "--limit", "1")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "predict_rows", predict_while_another_starts)
    first = invoke("evaluate", tiny_h5, "-c", checkpoint, "--out", out, "--limit", "2")
    assert first.exit_code == 0, first.output
    assert_one_line_error(second["result"], f"{out} is in use by another cnnmrf command", "another --out")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "pck.png", "predictions.json"]
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 2
    assert len(json.loads((out / "predictions.json").read_text())["examples"]) == 2
    # run after the first, the second finds its outputs and refuses them too
    assert_one_line_error(invoke("evaluate", tiny_h5, "-c", checkpoint, "--out", out), "already holds", "--force")


def test_evaluate_switches_are_applied_and_recorded(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    result = invoke(
        "evaluate", tiny_h5, "-c", checkpoint, "--out", tmp_path / "a", "--no-mrf", "--decoding", "parabola"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["headline"] == "detector" and "full" not in metrics
    assert metrics["options"]["use_spatial"] is False and metrics["options"]["decoding"] == "parabola"

    result = invoke(
        "evaluate",
        tiny_h5,
        "-c",
        checkpoint,
        "--out",
        tmp_path / "b",
        "--flip-test",
        "--scales",
        "1.0,0.8,1.2",
        "--batch-size",
        "3",
        "--limit",
        "3",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["options"]["flip_test"] is True and metrics["options"]["scales"] == [1.0, 0.8, 1.2]
    assert metrics["num_examples"] == 3 and metrics["num_split_examples"] == 4
    assert len(json.loads((tmp_path / "b" / "predictions.json").read_text())["examples"]) == 3


def test_evaluate_rejects_a_checkpoint_of_another_geometry(
    tiny_h5: Path, tiny_config: PreprocessConfig, tmp_path: Path
) -> None:
    other = write_tiny_checkpoint(tmp_path / "other.pt", replace(tiny_config, crop_scale=2.5))
    line = assert_one_line_error(
        invoke("evaluate", tiny_h5, "-c", other, "--out", tmp_path / "e"), "re-run", "preprocess", "--crop-scale 2.5"
    )
    assert "64px" in line
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_evaluate_bad_inputs_are_one_line_errors(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("evaluate", tmp_path / "nope.h5", "-c", checkpoint, "--out", tmp_path / "e"), "does not exist"
    )
    text_file = tmp_path / "fake.h5"
    text_file.write_text("not hdf5")
    assert_one_line_error(invoke("evaluate", text_file, "-c", checkpoint, "--out", tmp_path / "e"), "HDF5")
    assert_one_line_error(
        invoke("evaluate", tiny_h5, "-c", tmp_path / "missing.pt", "--out", tmp_path / "e"), "does not exist"
    )
    assert_one_line_error(
        invoke("evaluate", tiny_h5, "-c", checkpoint, "--out", tmp_path / "e", "--scales", "x"), "--scales"
    )
    assert not (tmp_path / "e").exists()


def test_evaluate_without_checkpoint_uses_the_bundled_weights(tiny_h5: Path, tmp_path: Path) -> None:
    assert default_checkpoint().is_file()  # part of the package: missing is a failure, not a skip
    # the bundled model was trained on 128 px crops, the tiny dataset holds 64 px ones
    line = assert_one_line_error(
        invoke("evaluate", tiny_h5, "--out", tmp_path / "e"), "128px", "re-run `cnnmrf preprocess`"
    )
    assert "flic_small.pt" in line


def test_missing_bundled_weights_are_one_line_naming_the_way_out(
    tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cnnmrf.bundled.BUNDLED_NAME", "not_there.pt")
    assert_one_line_error(invoke("evaluate", tiny_h5, "--out", tmp_path / "e"), "bundled weights", "--checkpoint")


def test_parse_scales() -> None:
    assert parse_scales("1.0,0.8, 1.2") == (1.0, 0.8, 1.2)
    for bad in ("", "a,b", "1.0,0", "9", "nan", "1.0,inf"):
        with pytest.raises(CnnmrfError):
            parse_scales(bad)


def test_split_val_scores_the_rows_training_held_out(tiny_h5: Path, checkpoint: Path, tmp_path: Path) -> None:
    """--split val scores the training split's held-out rows, drawn as the training loop draws them."""
    result = invoke(
        "evaluate",
        tiny_h5,
        "-c",
        checkpoint,
        "--out",
        tmp_path,
        "--split",
        "val",
        "--val-fraction",
        "0.25",
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_split_examples"] == 8  # the tiny training split
    held_out = holdout_rows(8, 0.25, 3)[1]
    assert len(held_out) == 2 and metrics["num_examples"] == 2
    with open_dataset(tiny_h5) as dataset:
        expected = dataset.read("train", ("index",), held_out)["index"]
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert [example["index"] for example in predictions["examples"]] == [int(i) for i in expected]


def test_holdout_rows_partition_the_split() -> None:
    train, val = holdout_rows(40, 0.1, 0)
    assert len(val) == 4 and len(train) == 36
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    assert np.array_equal(val, holdout_rows(40, 0.1, 0)[1]) and not np.array_equal(val, holdout_rows(40, 0.1, 1)[1])
    assert len(holdout_rows(1, 0.1, 0)[1]) == 0
