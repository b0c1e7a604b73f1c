"""The arithmetic does not change the answers: predict's people, joints and scores agree in float32 and bfloat16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.devices import autocast
from cnnmrf.inference.calibration import NUM_PERSON_FEATURES, Calibration, JointCalibration, PersonVerifier
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import predict_crops
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.search import box_iou, scan_proposals
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, checkpoint_state, load_checkpoint, save_checkpoint
from tests.fixtures import draw_image, red_blob_photo, tiny_annotations, torso_finder_model, write_tiny_checkpoint

CPU = torch.device("cpu")


def with_calibration(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` with a calibration whose person score reads every verifier feature (small random weights), so a
    change in any of them shows; joint scores read the peaks."""
    k, f = len(JOINT_NAMES), NUM_PERSON_FEATURES
    weights = np.random.default_rng(0).normal(0, 0.3, f)
    calibration = Calibration(
        {name: JointCalibration(np.full(k, 0.5), np.zeros(k)) for name in ("detector", "spatial")},
        PersonVerifier(np.zeros(f), np.ones(f), weights, 0.0),
        min_score=0.0,
    )
    state = load_checkpoint(checkpoint)
    del state["format"]
    state[CALIBRATION_KEY] = calibration.to_dict()
    save_checkpoint(out, state)
    return out


@pytest.fixture(scope="module")
def random_model(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated tiny model with random weights (detector + spatial model): busy, ambiguous heatmaps."""
    folder = tmp_path_factory.mktemp("precision")
    return with_calibration(write_tiny_checkpoint(folder / "tiny.pt", tiny_config), folder / "calibrated.pt")


@pytest.fixture(scope="module")
def finder(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated torso finder (:func:`tests.fixtures.torso_finder_model`): red blobs are torsos."""
    folder = tmp_path_factory.mktemp("precision_finder")
    save_checkpoint(folder / "finder.pt", checkpoint_state(torso_finder_model(tiny_config.input_size), tiny_config))
    return with_calibration(folder / "finder.pt", folder / "calibrated.pt")


def test_candidates_are_predicted_and_scored_in_float32_whatever_the_search_precision(random_model: Path) -> None:
    # Busy random heatmaps: a bfloat16 forward pass moves their peaks (the test below checks that it does), so
    # equality here means the given boxes went through the float32 model.
    photo = draw_image(1, tiny_annotations(), np.random.default_rng(7))
    box = np.array([60.0, 30.0, 90.0, 75.0])
    found = {}
    for precision in ("fp32", "bf16"):
        predictor = PosePredictor.from_checkpoint(random_model, "cpu", precision)
        assert predictor.precision == precision and predictor.crop_config.dtype == torch.float32
        found[precision] = predictor.predict_image(photo, box=box)
    assert found["bf16"].precision == "bf16" and found["bf16"].to_dict()["precision"] == "bf16"
    [a], [b] = found["fp32"].people, found["bf16"].people
    np.testing.assert_array_equal(a.joints, b.joints)
    assert a.score == b.score
    np.testing.assert_array_equal(a.joint_scores, b.joint_scores)


def test_bfloat16_does_move_the_random_models_joints(random_model: Path) -> None:
    # The control for the test above: the same crop predicted under bfloat16 autocast decodes elsewhere.
    predictor = PosePredictor.from_checkpoint(random_model, "cpu", "fp32")
    crops = np.array(draw_image(1, tiny_annotations(), np.random.default_rng(7)))[None, :64, 40:104]  # (1, 64, 64, 3)
    transforms = np.array([[[1.0, 0.0, -40.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    joints = {
        dtype: predict_crops(predictor.model, crops, transforms, config=InferenceConfig(dtype=dtype))["spatial"].joints
        for dtype in (torch.float32, torch.bfloat16)
    }
    assert not np.array_equal(joints[torch.float32], joints[torch.bfloat16])


def test_scan_proposals_are_the_same_in_float32_and_bfloat16(finder: Path) -> None:
    predictor = PosePredictor.from_checkpoint(finder, "cpu", "fp32")
    photo = red_blob_photo(97.3, 51.6)
    boxes = {}
    for dtype in (torch.float32, torch.bfloat16):
        with autocast(CPU, dtype):
            found = scan_proposals(predictor.model.detector, photo, predictor.torso_px, config=predictor.search)
        boxes[dtype] = np.stack([p.box for p in found])
    np.testing.assert_array_equal(boxes[torch.float32], boxes[torch.bfloat16])


@pytest.mark.parametrize("blobs", [[(97.3, 51.6)], [(40.0, 60.0), (121.5, 58.2)]])
def test_predict_finds_the_same_people_in_float32_and_bfloat16(finder: Path, blobs: list) -> None:
    # The bar: the same people, person scores within 0.05, joints within 2% of the image height.
    pixels = np.minimum.reduce([np.array(red_blob_photo(x, y), dtype=np.int16) for x, y in blobs])
    pixels[..., 0] = np.max([np.array(red_blob_photo(x, y))[..., 0] for x, y in blobs], axis=0)
    photo = Image.fromarray(pixels.astype(np.uint8))
    found = {
        p: PosePredictor.from_checkpoint(finder, "cpu", p, min_score=0.0).predict_image(photo) for p in ("fp32", "bf16")
    }
    a, b = found["fp32"].people, found["bf16"].people
    assert len(a) == len(b) >= len(blobs)
    height = photo.size[1]
    for person_a, person_b in zip(a, b):
        assert box_iou(person_a.box, person_b.box)[0, 0] > 0.9
        assert abs(person_a.score - person_b.score) <= 0.05
        assert np.abs(person_a.joints - person_b.joints).max() <= 0.02 * height
