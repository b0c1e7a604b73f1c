"""Tests of score calibration: logistic fits, calibration error, the joint and person maps, faces and serialisation."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from cnnmrf.inference.calibration import (
    CALIBRATION_FORMAT,
    NUM_PERSON_FEATURES,
    Calibration,
    JointCalibration,
    PersonVerifier,
    evidence_feature,
    expected_calibration_error,
    fit_logistic,
    person_features,
    sigmoid,
)
from cnnmrf.inference.crops import Joints
from cnnmrf.inference.faces import FaceGeometry, fit_face_geometry
from cnnmrf.joints import JOINT_NAMES

K = len(JOINT_NAMES)
J = {name: i for i, name in enumerate(JOINT_NAMES)}


def simulate(rng: np.random.Generator, weights: np.ndarray, bias: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, F) standard normal features and (n,) 0/1 labels drawn from ``sigmoid(x @ weights + bias)``."""
    x = rng.normal(size=(n, len(weights)))
    return x, (rng.random(n) < sigmoid(x @ weights + bias)).astype(np.float64)


def test_sigmoid_is_stable() -> None:
    np.testing.assert_allclose(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(sigmoid(np.array([-2.0, 3.0])), 1 / (1 + np.exp([2.0, -3.0])))


def test_fit_logistic_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    x, y = simulate(rng, np.array([1.5, -2.0, 0.0]), 0.5, 4000)
    weights, bias = fit_logistic(x, y, l2=1e-6)
    np.testing.assert_allclose(weights, [1.5, -2.0, 0.0], atol=0.25)
    assert bias == pytest.approx(0.5, abs=0.2)
    shrunk, _ = fit_logistic(x, y, l2=1.0)  # the ridge pulls the weights towards 0, not the bias
    assert np.abs(shrunk).sum() < np.abs(weights).sum()


def test_fit_logistic_solves_batched_problems_independently() -> None:
    rng = np.random.default_rng(1)
    truth = [(np.array([2.0, 0.5]), -1.0), (np.array([-1.0, 1.0]), 1.0), (np.array([0.0, 3.0]), 0.0)]
    problems = [simulate(rng, w, b, 3000) for w, b in truth]
    x, y = np.stack([p[0] for p in problems]), np.stack([p[1] for p in problems])  # (3, N, 2), (3, N)
    weights, bias = fit_logistic(x, y, l2=1e-6)
    assert weights.shape == (3, 2) and bias.shape == (3,)
    for i, (w, b) in enumerate(truth):
        alone_w, alone_b = fit_logistic(*problems[i], l2=1e-6)
        np.testing.assert_allclose(weights[i], alone_w, rtol=1e-8, atol=1e-10)
        assert bias[i] == pytest.approx(alone_b, rel=1e-8, abs=1e-10)
        np.testing.assert_allclose(weights[i], w, atol=0.3)
        assert bias[i] == pytest.approx(b, abs=0.25)


def test_fit_logistic_sample_weights_leave_out_and_repeat_examples() -> None:
    rng = np.random.default_rng(2)
    x, y = simulate(rng, np.array([1.0, -1.0]), 0.2, 500)
    reference = fit_logistic(x, y)
    # weight 0: junk examples (flipped labels, far out) change nothing
    junk_x, junk_y = rng.normal(5.0, 1.0, size=(200, 2)), np.ones(200)
    left_out = fit_logistic(
        np.concatenate([x, junk_x]), np.concatenate([y, junk_y]), sample_weight=np.r_[np.ones(500), np.zeros(200)]
    )
    for a, b in zip(reference, left_out):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # weight 2: the same as the example twice
    doubled = fit_logistic(x, y, sample_weight=np.r_[np.full(100, 2.0), np.ones(400)])
    repeated = fit_logistic(np.concatenate([x, x[:100]]), np.concatenate([y, y[:100]]))
    for a, b in zip(doubled, repeated):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert not np.allclose(doubled[0], reference[0])


def test_expected_calibration_error_known_values() -> None:
    # every bin's mean outcome equals its mean probability: 0
    p = np.r_[np.full(4, 0.25), np.full(4, 0.75)]
    o = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=np.float64)
    assert expected_calibration_error(p, o) == pytest.approx(0.0, abs=1e-12)
    # simulated well-calibrated probabilities: close to 0
    rng = np.random.default_rng(3)
    p = rng.random(20000)
    assert expected_calibration_error(p, (rng.random(20000) < p).astype(float)) < 0.02
    # certain and always wrong: 1
    assert expected_calibration_error(np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])) == pytest.approx(1.0)
    # two bins by hand: [0, 0.5) holds 0.2, 0.4 (outcomes 0, 1): |1 - 0.6| = 0.4; [0.5, 1] holds 0.6, 0.9 (1, 1):
    # |2 - 1.5| = 0.5; ECE = (0.4 + 0.5) / 4
    p, o = np.array([0.2, 0.4, 0.6, 0.9]), np.array([0.0, 1.0, 1.0, 1.0])
    assert expected_calibration_error(p, o, bins=2) == pytest.approx(0.225)
    # NaN outcomes are left out, any shape is flattened
    assert expected_calibration_error(np.r_[p, 0.3].reshape(1, 5), np.r_[o, np.nan], bins=2) == pytest.approx(0.225)
    assert np.isnan(expected_calibration_error(np.array([0.5]), np.array([np.nan])))


def test_joint_calibration_recovers_each_joints_map_and_ignores_nan_outcomes() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    scale, offset = np.linspace(0.5, 2.0, K), np.linspace(-1.0, 1.0, K)
    scores = rng.normal(0.0, 2.0, size=(n, K))
    correct = (rng.random((n, K)) < sigmoid(scale * scores + offset)).astype(np.float64)
    unknown = rng.random((n, K)) < 0.3
    correct[unknown] = np.nan
    scores[unknown] += 50.0  # the left-out examples would drag every fit if they counted
    fitted = JointCalibration.fit(scores, correct)
    assert fitted.scale.shape == (K,) and fitted.offset.shape == (K,)
    np.testing.assert_allclose(fitted.scale, scale, atol=0.25)
    np.testing.assert_allclose(fitted.offset, offset, atol=0.25)
    for k in (0, K - 1):  # the same as fitting that joint alone on its known outcomes
        known = ~unknown[:, k]
        a, b = fit_logistic(scores[known, k, None], correct[known, k], l2=1e-4)
        assert fitted.scale[k] == pytest.approx(a[0], rel=1e-6) and fitted.offset[k] == pytest.approx(b, rel=1e-6)
    probability = fitted.probability(scores[:5])
    assert probability.shape == (5, K)
    np.testing.assert_allclose(probability, sigmoid(fitted.scale * scores[:5] + fitted.offset))


def test_person_verifier_separates_separable_features() -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, NUM_PERSON_FEATURES)) * 10 + 3  # mostly noise, on another scale
    labels = np.r_[np.ones(100), np.zeros(100)]
    features[:, 4] = np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 0.3, 200)  # the one informative feature
    verifier = PersonVerifier.fit(features, labels)
    np.testing.assert_allclose(verifier.mean, features.mean(axis=0))
    assert verifier.weights.shape == (NUM_PERSON_FEATURES,) and np.argmax(np.abs(verifier.weights)) == 4
    p = verifier.probability(features)
    assert p.shape == (200,) and (p[:100] > 0.5).all() and (p[100:] < 0.5).all()  # every example on its side
    assert p[:100].mean() > 0.9 and p[100:].mean() < 0.1  # and confidently so (the ridge caps how far)


def test_a_verifier_with_the_person_detectors_evidence_reads_it_and_takes_it_unknown_as_average() -> None:
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(100), np.zeros(100)]
    person = np.where(labels == 1, 0.8, 0.1) + rng.normal(0, 0.05, 200)  # the detector's probability: informative
    features = np.c_[rng.normal(size=(200, NUM_PERSON_FEATURES)), evidence_feature(person)]  # (200, F + 1)
    verifier = PersonVerifier.fit(features, labels)
    assert verifier.uses_evidence and np.argmax(np.abs(verifier.weights)) == NUM_PERSON_FEATURES
    p = verifier.probability(features)
    assert (p[:100] > 0.5).all() and (p[100:] < 0.5).all()
    unknown = features.copy()
    unknown[:, -1] = np.nan  # no person detector ran: its feature counts as its mean
    standardised = np.nan_to_num((unknown - verifier.mean) / verifier.std, nan=0.0)
    np.testing.assert_allclose(verifier.probability(unknown), sigmoid(standardised @ verifier.weights + verifier.bias))
    plain = PersonVerifier.fit(features[:, :-1], labels)  # one without evidence reads only the first F columns
    assert not plain.uses_evidence
    np.testing.assert_array_equal(plain.probability(features), plain.probability(features[:, :-1]))
    assert evidence_feature(np.array([0.5, 1.0, np.nan]))[0] == 0 and np.isnan(evidence_feature(np.array([np.nan])))
    assert evidence_feature(np.array([1.0]))[0] == pytest.approx(np.log(999))  # clipped at 0.999


def make_calibration(seed: int = 6) -> Calibration:
    """A calibration of random, finite numbers."""
    rng = np.random.default_rng(seed)
    joints = {name: JointCalibration(rng.normal(size=K), rng.normal(size=K)) for name in ("detector", "spatial")}
    f = NUM_PERSON_FEATURES
    person = PersonVerifier(rng.normal(size=f), rng.random(f) + 0.5, rng.normal(size=f), float(rng.normal()))
    report = {"frames": 3, "joint_score_ece": {"detector": 0.1}}
    return Calibration(joints, person, FaceGeometry(0.1, 2.1, 3.2), 0.35, report)


def test_calibration_round_trips_through_json() -> None:
    calibration = make_calibration()
    data = json.loads(json.dumps(calibration.to_dict(), allow_nan=False))
    assert data["format"] == CALIBRATION_FORMAT
    loaded = Calibration.from_dict(data)
    assert set(loaded.joints) == {"detector", "spatial"}
    for name, joint in calibration.joints.items():
        np.testing.assert_array_equal(loaded.joints[name].scale, joint.scale)
        np.testing.assert_array_equal(loaded.joints[name].offset, joint.offset)
    for attribute in ("mean", "std", "weights"):
        np.testing.assert_array_equal(getattr(loaded.person, attribute), getattr(calibration.person, attribute))
    assert loaded.person.bias == calibration.person.bias
    assert loaded.faces == calibration.faces and loaded.min_score == 0.35 and loaded.report == calibration.report
    features = np.random.default_rng(7).normal(size=(4, NUM_PERSON_FEATURES))
    np.testing.assert_allclose(loaded.person.probability(features), calibration.person.probability(features))


def damaged(change: Any) -> dict[str, Any]:
    """A valid calibration's dict after ``change(d)`` edits it."""
    data = make_calibration().to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    "data",
    [
        None,
        [1, 2, 3],
        damaged(lambda d: d.update(format="cnnmrf-calibration-v0")),
        damaged(lambda d: d.pop("format")),
        damaged(lambda d: d["joints"]["spatial"].update(scale=[1.0] * (K - 1))),  # wrong size
        damaged(lambda d: d["joints"]["detector"].update(offset=[[0.0] * K])),  # wrong shape
        damaged(lambda d: d["person"].update(weights=[0.0] * (NUM_PERSON_FEATURES + 1))),
        damaged(lambda d: d["person"]["std"].__setitem__(3, float("nan"))),
        damaged(lambda d: d["person"].update(bias=float("inf"))),
        damaged(lambda d: d["person"].update(bias="high")),
        damaged(lambda d: d.update(min_score=None)),
        damaged(lambda d: d.pop("person")),
        damaged(lambda d: d["faces"].pop("height")),
        damaged(lambda d: d.update(joints=[1, 2])),
    ],
    ids=[
        "none",
        "a-list",
        "old-format",
        "no-format",
        "short-scale",
        "2d-offset",
        "long-weights",
        "nan-std",
        "inf-bias",
        "text-bias",
        "no-min-score",
        "no-person",
        "no-face-height",
        "joints-a-list",
    ],
)
def test_calibration_from_dict_refuses_malformed_data(data: Any) -> None:
    with pytest.raises(ValueError):
        Calibration.from_dict(data)


def test_fit_face_geometry_recovers_the_geometry_that_made_the_boxes() -> None:
    rng = np.random.default_rng(8)
    truth = FaceGeometry(offset_x=0.15, offset_y=2.1, height=3.3)
    corner, size = rng.uniform(0, 400, size=(9, 2)), rng.uniform(15, 80, size=(9, 1))
    faces = np.concatenate([corner, corner + size], axis=1)  # (9, 4) square face boxes
    torsos = truth.torso(faces)  # (9, 4)
    assert torsos.shape == (9, 4)
    np.testing.assert_allclose((torsos[:, 2] - torsos[:, 0]) / (torsos[:, 3] - torsos[:, 1]), 2 / 3)
    fitted = fit_face_geometry(faces, torsos)
    for name in ("offset_x", "offset_y", "height"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name))
    # the median: one mismatched pair does not move it
    outlier = fit_face_geometry(np.r_[faces, faces[:1]], np.r_[torsos, torsos[:1] + [300, -200, 500, 100]])
    assert outlier.to_dict() == pytest.approx(truth.to_dict())
    assert FaceGeometry.from_dict(json.loads(json.dumps(truth.to_dict()))) == truth


def test_person_features_shape_and_hand_computed_body_proportions() -> None:
    n = 5
    rng = np.random.default_rng(9)
    det_joints, spatial_joints = rng.uniform(0, 300, size=(2, n, K, 2))
    det_scores, spatial_scores, det_mass, spatial_mass = rng.normal(size=(4, n, K))
    boxes = np.tile([50.0, 50.0, 117.0, 150.0], (n, 1))  # 100 tall, centre (83.5, 100)
    boxes[1] = [60.0, 60.0, 60.0, 60.0]  # degenerate: zero height
    # person 0 by hand: shoulders 40 apart at y 100, hips 90 below, nose 60 above them, torso joint at the centre
    spatial_joints[0, [J["lsho"], J["rsho"], J["lhip"], J["rhip"]]] = [(120, 100), (80, 100), (110, 190), (90, 190)]
    spatial_joints[0, J["nose"]] = (100, 40)
    spatial_joints[0, J["torso"]] = (83.5, 100)
    det_joints[0] = spatial_joints[0]
    det_joints[0, 0] += (30.0, 40.0)  # the detector put lsho 50 px (half a box height) away
    detector = Joints(det_joints, det_scores, det_mass)
    spatial = Joints(spatial_joints, spatial_scores, spatial_mass)
    features = person_features(detector, spatial, boxes)
    assert features.shape == (n, 5 * K + 5) == (n, NUM_PERSON_FEATURES) and np.isfinite(features).all()
    for i, part in enumerate((det_scores, spatial_scores, det_mass, spatial_mass)):
        np.testing.assert_array_equal(features[:, i * K : (i + 1) * K], part)
    moved = features[:, 4 * K : 5 * K]
    assert moved[0, 0] == pytest.approx(0.5) and (moved[0, 1:] == 0).all()
    assert ((moved >= 0) & (moved <= 1)).all() and (moved[1] == 1).all()  # capped at 1 box height
    np.testing.assert_allclose(features[0, 5 * K :], [0.4, 0.9, 0.6, 0.0, 0.0])  # no faces searched: 0
    # a face (0.5 box heights wide) centred 10 px from person 0's nose counts; one far away or tiny does not
    near, far, tiny = [75.0, 20.0, 125.0, 70.0], [200.0, 200.0, 250.0, 250.0], [105.0, 45.0, 110.0, 50.0]
    faces = [np.array([near])] + [np.array([far, tiny])] + [np.zeros((0, 4))] * (n - 2)
    spatial_joints[1, J["nose"]] = (107.5, 47.5)
    with_faces = person_features(detector, Joints(spatial_joints, spatial_scores, spatial_mass), boxes, faces)
    assert with_faces[0, -1] == 1.0 and (with_faces[1:, -1] == 0).all()
    assert (np.abs(features[:, 3 * K :]) <= 3).all()  # body proportions are clipped
