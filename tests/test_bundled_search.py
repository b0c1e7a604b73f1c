"""The bundled, calibrated weights on photos: the bundled astronaut is one person, person-free photos are nobody."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnmrf.bundled import default_checkpoint
from cnnmrf.evaluation.frames import synthetic_clutter
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.joints import JOINT_NAMES

ASTRONAUT = default_checkpoint().parents[1] / "assets" / "astronaut.png"
# Hand labels on the 512x512 astronaut (pixels): her nose, and her two shoulders (the suit's shoulder seams).
NOSE = (220.0, 128.0)
SHOULDERS = ((105.0, 240.0), (330.0, 240.0))
TORSO_HEIGHT = 220.0  # shoulders to hips, about


@pytest.fixture(scope="module")
def predictor() -> PosePredictor:
    found = PosePredictor.from_checkpoint(default_checkpoint(), "cpu")
    assert found.calibration is not None, "the bundled weights must carry a calibration (cnnmrf calibrate)"
    return found


def test_the_bundled_photo_is_one_person_with_the_nose_and_shoulders_in_place(predictor: PosePredictor) -> None:
    prediction = predictor.predict_image(Image.open(ASTRONAUT).convert("RGB"))
    assert len(prediction.people) == 1
    person = prediction.people[0]
    assert person.score is not None and person.score >= predictor.threshold
    joints = dict(zip(JOINT_NAMES, person.joints))
    assert np.linalg.norm(joints["nose"] - NOSE) < 0.25 * TORSO_HEIGHT
    found = sorted([joints["lsho"], joints["rsho"]], key=lambda p: p[0])  # either labelling order
    for point, label in zip(found, SHOULDERS):
        assert np.linalg.norm(point - label) < 0.35 * TORSO_HEIGHT, (point, label)


CAT_IS_TAKEN_FOR_A_PERSON = pytest.mark.xfail(
    strict=True,
    reason="known limitation: the verifier reads only the pose model's outputs, and the cat's head and body look like "
    "a confident upper body to them (person score 0.49 at the default 0.35); see docs/results.md",
)


@pytest.mark.parametrize(
    "name", ["coffee", pytest.param("chelsea", marks=CAT_IS_TAKEN_FOR_A_PERSON), "brick", "rocket", "clutter"]
)
def test_person_free_photos_give_nobody(predictor: PosePredictor, name: str) -> None:
    """A coffee cup, a cat, a wall, a rocket and synthetic clutter (a seed calibration never saw) hold no person."""
    if name == "clutter":
        images = synthetic_clutter(3, seed=12345)
    else:
        array = getattr(data, name)()
        images = [Image.fromarray(array).convert("RGB")]
    for image in images:
        assert predictor.predict_image(image).people == []
