"""Tests for PCK scoring, the observer-centric rule and the evaluation report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnnmrf.data.flic import observer_centric
from cnnmrf.evaluation.pck import (
    CURVE_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    PCKResult,
    evaluate_pck,
    normalized_distances,
    pck,
)
from cnnmrf.evaluation.report import load_predictions, pck_table, plot_pck_curves, save_metrics, save_predictions
from cnnmrf.joints import JOINT_NAMES

K = len(JOINT_NAMES)
J = {name: i for i, name in enumerate(JOINT_NAMES)}


def make_truth(n: int = 1) -> np.ndarray:
    """Ground truth with lsho at (0, 0) and rhip at (30, 40): normaliser 50 px."""
    truth = np.tile(np.arange(K * 2, dtype=np.float64).reshape(1, K, 2) * 10.0 + 100.0, (n, 1, 1))
    truth[:, J["lsho"]] = (0.0, 0.0)
    truth[:, J["rhip"]] = (30.0, 40.0)
    return truth


def test_constants() -> None:
    assert DEFAULT_THRESHOLDS == (0.05, 0.1, 0.15, 0.2)
    assert len(CURVE_THRESHOLDS) == 50
    assert CURVE_THRESHOLDS[0] == 0.01 and CURVE_THRESHOLDS[-1] == 0.5


def test_normaliser_and_threshold() -> None:
    truth = make_truth()
    pred = truth.copy()
    pred[0, J["lwri"]] += (9.0, 0.0)  # 9 px off -> 9 / 50 = 0.18
    d = normalized_distances(pred, truth)
    assert d.shape == (1, K)
    assert d[0, J["lwri"]] == pytest.approx(0.18)
    assert np.all(np.delete(d[0], J["lwri"]) == 0.0)
    p = pck(d, [0.15, 0.2])
    assert p.shape == (2, K)
    assert p[0, J["lwri"]] == 0.0 and p[1, J["lwri"]] == 1.0


def test_boundary_inclusive() -> None:
    truth = make_truth()
    pred = truth.copy()
    pred[0, J["lelb"]] += (3.0, 4.0)  # exactly 5 px -> 0.1
    d = normalized_distances(pred, truth)
    assert d[0, J["lelb"]] == 0.1
    p = pck(d, [0.09, 0.1])
    assert p[0, J["lelb"]] == 0.0 and p[1, J["lelb"]] == 1.0


def test_nan_handling() -> None:
    truth = make_truth(4)
    pred = truth.copy()
    pred[0, J["rwri"]] += (40.0, 0.0)  # miss (0.8)
    truth[1, J["rwri"]] = np.nan  # unlabelled: excluded
    pred[2, J["rwri"]] = np.nan  # labelled but no prediction: a miss
    d = normalized_distances(pred, truth)
    assert np.isnan(d[1, J["rwri"]]) and np.isinf(d[2, J["rwri"]])
    p = pck(d, [0.2])
    assert p[0, J["rwri"]] == pytest.approx(1 / 3)  # only example 3 is correct, out of 3 labelled
    # A missing normaliser excludes the whole example.
    truth[3, J["rhip"]] = np.nan
    d = normalized_distances(pred, truth)
    assert np.all(np.isnan(d[3]))
    # A joint with no labelled example gets NaN, not 0.
    assert np.isnan(pck(np.full((3, 2), np.nan), [0.1])).all()


def test_group_averages_and_means() -> None:
    truth = make_truth(2)
    pred = truth.copy()
    pred[:, J["lwri"]] += (20.0, 0.0)  # 0.4: wrong at all default thresholds
    pred[0, J["rwri"]] += (20.0, 0.0)  # rwri: 1 of 2 correct
    pred[:, J["nose"]] += (6.0, 8.0)  # 0.2: correct only at 0.2
    res = evaluate_pck(pred, truth)
    assert res.num_examples == 2
    assert res.per_joint.shape == (4, K) and res.curve.shape == (50, K)
    np.testing.assert_allclose(res.groups["wrist"], [0.25] * 4)  # mean(0, 0.5)
    np.testing.assert_allclose(res.groups["elbow"], [1.0] * 4)
    np.testing.assert_allclose(res.groups["nose"], [0, 0, 0, 1.0])
    np.testing.assert_allclose(res.groups["torso"], [1.0] * 4)
    np.testing.assert_allclose(res.groups["mean"], (K - 1.5 - np.array([1, 1, 1, 0])) / K)
    np.testing.assert_allclose(res.groups["mean_limbs"], [(8 - 1.5) / 8] * 4)
    assert res.at("wrist", 0.1) == 0.25 and res.at("rwri", 0.1) == 0.5
    # The curve reaches the lwri error (0.4) exactly.
    i = int(np.flatnonzero(np.isclose(res.curve_thresholds, 0.4))[0])
    assert res.curve[i - 1, J["lwri"]] == 0.0 and res.curve[i, J["lwri"]] == 1.0
    assert res.group_curves["wrist"][-1] == 1.0


def _arm_labels(lsho_x: float, lelb_x: float, lwri_x: float, rsho_x: float, relb_x: float, rwri_x: float) -> np.ndarray:
    joints = np.zeros((K, 2))
    joints[:, 1] = np.arange(K)  # distinct y so swaps are visible
    for name, x in zip(
        ("lsho", "lelb", "lwri", "rsho", "relb", "rwri"), (lsho_x, lelb_x, lwri_x, rsho_x, relb_x, rwri_x)
    ):
        joints[J[name], 0] = x
    joints[J["lhip"]] = (10.0, 100.0)
    joints[J["rhip"]] = (90.0, 100.0)  # hips "facing away" too: must stay untouched
    joints[J["nose"]] = (50.0, 5.0)
    return joints


def test_observer_centric_swap() -> None:
    away = _arm_labels(10, 5, 0, 90, 95, 100)  # every left arm joint left of its twin -> swap
    facing = _arm_labels(90, 95, 100, 10, 5, 0)  # facing the camera -> unchanged
    mixed = _arm_labels(10, 95, 0, 90, 5, 100)  # only some left of twins -> unchanged
    out = observer_centric(away)
    swapped = away.copy()
    for a, b in (("lsho", "rsho"), ("lelb", "relb"), ("lwri", "rwri")):
        swapped[[J[a], J[b]]] = away[[J[b], J[a]]]
    np.testing.assert_array_equal(out, swapped)
    for name in ("lhip", "rhip", "nose", "torso"):
        np.testing.assert_array_equal(out[J[name]], away[J[name]])
    np.testing.assert_array_equal(observer_centric(facing), facing)
    np.testing.assert_array_equal(observer_centric(mixed), mixed)
    # Batched, pure (input untouched) and idempotent on the swapped result.
    batch = np.stack([away, facing, mixed])
    before = batch.copy()
    out_b = observer_centric(batch)
    np.testing.assert_array_equal(batch, before)
    np.testing.assert_array_equal(out_b, np.stack([swapped, facing, mixed]))
    np.testing.assert_array_equal(observer_centric(out_b), out_b)
    # NaN comparisons never trigger a swap.
    nan_case = away.copy()
    nan_case[J["lwri"]] = np.nan
    np.testing.assert_array_equal(observer_centric(nan_case), nan_case)


def test_predictions_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 3
    joints = rng.uniform(0, 720, size=(n, K, 2))
    scores = rng.uniform(0, 1, size=(n, K))
    joints[1, 2] = np.nan
    indices = np.array([4, 17, 3002])
    files = ["a.jpg", "b.jpg", "12-oclock-high-special-edition-00006361.jpg"]
    path = tmp_path / "predictions.json"
    save_predictions(path, indices, files, joints, scores)
    data = json.loads(path.read_text())
    assert set(data["examples"][0]) == {"index", "file", "joints", "scores"}
    assert list(data["examples"][0]["joints"]) == list(JOINT_NAMES)
    idx2, files2, joints2, scores2 = load_predictions(path)
    np.testing.assert_array_equal(idx2, indices)
    assert files2 == files
    np.testing.assert_array_equal(joints2, np.round(joints, 2))
    np.testing.assert_array_equal(scores2, np.round(scores, 4))
    assert np.abs(joints2[0] - joints[0]).max() <= 0.005 + 1e-9
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    # A second save/load is a fixed point.
    save_predictions(path, idx2, files2, joints2, scores2)
    np.testing.assert_array_equal(load_predictions(path)[2], joints2)


def test_metrics_json(tmp_path) -> None:
    truth = make_truth(5)
    pred = truth + np.random.default_rng(1).normal(0, 4, size=truth.shape)
    truth[0, J["nose"]] = np.nan
    res = evaluate_pck(pred, truth)
    path = tmp_path / "metrics.json"
    save_metrics(path, res, {"split": "test", "mrf": True})
    data = json.loads(path.read_text())  # strict JSON parses
    for key in ("num_examples", "thresholds", "pck", "groups", "curve", "num_labelled", "split", "mrf"):
        assert key in data
    assert data["num_examples"] == 5 and data["num_labelled"]["nose"] == 4
    assert set(data["groups"]) >= {"wrist", "elbow", "shoulder", "hip", "nose", "torso", "mean", "mean_limbs"}
    assert data["groups"]["wrist"]["0.05"] == round(float(res.groups["wrist"][0]) * 100, 2)
    assert len(data["curve"]["joints"]["lwri"]) == 50
    back = PCKResult.from_dict(data)
    np.testing.assert_allclose(back.per_joint, res.per_joint, atol=1e-4)
    np.testing.assert_allclose(back.curve, res.curve, atol=1e-4)
    with pytest.raises(ValueError):
        save_metrics(path, res, {"pck": 1})


def test_nan_result_serialises() -> None:
    truth = make_truth(2)
    truth[:, J["nose"]] = np.nan
    d = evaluate_pck(truth, truth).to_dict()
    assert d["pck"]["nose"]["0.1"] is None
    json.dumps(d, allow_nan=False)
    assert not math.isnan(d["groups"]["mean"]["0.1"])


def test_plot_and_table(tmp_path) -> None:
    truth = make_truth(3)
    pred = truth + 3.0
    res = evaluate_pck(pred, truth)
    base = evaluate_pck(pred + 5.0, truth)
    path = tmp_path / "out" / "pck.png"
    plot_pck_curves(res, path, other=base, label="ConvNet + MRF", other_label="ConvNet")
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    table = pck_table(res, "test")
    assert table.row_count == 7
    assert [c.header for c in table.columns] == ["joint", "r=0.05", "r=0.1", "r=0.15", "r=0.2"]
