"""The bundled, calibrated weights on photos, searched as `predict` searches by default (the bundled person detector):
the astronaut, the cameraman and Grace Hopper are one person each, person-free photos are nobody."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnmrf.bundled import default_checkpoint, default_person_checkpoint
from cnnmrf.evaluation.frames import synthetic_clutter
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.person import load_person_checkpoint, person_detector_from

ASTRONAUT = default_checkpoint().parents[1] / "assets" / "astronaut.png"
# Hand labels on the 512x512 astronaut (pixels): her nose, and her two shoulders (the suit's shoulder seams).
NOSE = (220.0, 128.0)
SHOULDERS = ((105.0, 240.0), (330.0, 240.0))
TORSO_HEIGHT = 220.0  # shoulders to hips, about


@dataclass(frozen=True)
class Labelled:
    """A photo of one person, hand-labelled (pixels): the nose, the two shoulders (either order) and the torso height
    (shoulders to hips, about; the tolerances are shares of it)."""

    nose: tuple[float, float]
    shoulders: tuple[tuple[float, float], tuple[float, float]]
    torso_height: float

    def image(self, name: str) -> Image.Image:
        if name == "astronaut":
            return Image.open(ASTRONAUT).convert("RGB")
        if name == "camera":
            return Image.fromarray(data.camera()).convert("RGB")
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:  # the portrait of matplotlib's examples
            return Image.open(file).convert("RGB")


PEOPLE = {
    "astronaut": Labelled(NOSE, SHOULDERS, TORSO_HEIGHT),
    # scikit-image's cameraman, bent over his camera in profile, facing right; hips below the frame's middle
    "camera": Labelled((250.0, 160.0), ((130.0, 140.0), (175.0, 190.0)), 250.0),
    # Grace Hopper, head and shoulders filling the 512x600 portrait; her hips are far below the frame
    "hopper": Labelled((262.0, 250.0), ((75.0, 385.0), (445.0, 385.0)), 450.0),
}


@pytest.fixture(scope="module")
def predictor() -> PosePredictor:
    person = person_detector_from(load_person_checkpoint(default_person_checkpoint()))
    found = PosePredictor.from_checkpoint(default_checkpoint(), "cpu", person=person)
    assert found.calibration is not None, "the bundled weights must carry a calibration (cnnmrf calibrate)"
    return found


CAMERAMAN_IS_DOUBTED = pytest.mark.xfail(
    strict=True,
    reason="known limitation: the cameraman, bent over his camera in profile (a pose FLIC's film stills hardly hold), "
    "gets a person score of 0.07, below the default 0.15; see docs/results.md",
)


@pytest.mark.parametrize("name", ["astronaut", pytest.param("camera", marks=CAMERAMAN_IS_DOUBTED), "hopper"])
def test_a_photo_of_one_person_is_one_person_with_the_nose_and_shoulders_in_place(
    predictor: PosePredictor, name: str
) -> None:
    labels = PEOPLE[name]
    prediction = predictor.predict_image(labels.image(name))
    assert len(prediction.people) == 1
    person = prediction.people[0]
    assert person.score is not None and person.score >= predictor.threshold
    joints = dict(zip(JOINT_NAMES, person.joints))
    assert np.linalg.norm(joints["nose"] - labels.nose) < 0.25 * labels.torso_height
    found = sorted([joints["lsho"], joints["rsho"]], key=lambda p: p[0])  # either labelling order
    for point, label in zip(found, sorted(labels.shoulders)):
        assert np.linalg.norm(point - label) < 0.35 * labels.torso_height, (point, label)


@pytest.mark.parametrize("name", ["coffee", "chelsea", "brick", "rocket", "clutter"])
def test_person_free_photos_give_nobody(predictor: PosePredictor, name: str) -> None:
    """A coffee cup, a cat, a wall, a rocket and synthetic clutter (a seed calibration never saw) hold no person."""
    if name == "clutter":
        images = synthetic_clutter(3, seed=12345)
    else:
        array = getattr(data, name)()
        images = [Image.fromarray(array).convert("RGB")]
    for image in images:
        assert predictor.predict_image(image).people == []
