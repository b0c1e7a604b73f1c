"""Tests of predict's parts: select_people (merge, threshold, cap), the scorer, the proposal source's interface and
its default (the person search), and the top-down runner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.heatmaps import Decoder
from cnnmrf.inference.calibration import NUM_PERSON_FEATURES, Calibration, JointCalibration, PersonVerifier
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import DETECTOR, SPATIAL, final_joints
from cnnmrf.inference.faces import FaceGeometry
from cnnmrf.inference.people import Scorer, select_people
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.proposals import PersonSearch, Photo, ProposalSource
from cnnmrf.inference.search import Proposal, SearchConfig, box_from_joints, box_iou, scan_proposals
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import checkpoint_state, save_checkpoint
from tests.fixtures import draw_image, red_blob_photo, tiny_annotations, torso_finder_model

TORSO_PX = 64 / 3  # the tiny models' training torso height: 64 px inputs, crops 3x the torso box
# Two photos' candidates. Photo 0: b overlaps a (IoU 0.82), d lies inside c (all of it); photo 1: two apart.
BOXES = np.array(
    [
        [0.0, 0.0, 20.0, 30.0],  # 0 a, photo 0
        [1.0, 1.0, 21.0, 31.0],  # 1 b, photo 0: a duplicate of a
        [100.0, 0.0, 120.0, 30.0],  # 2 c, photo 0
        [102.0, 2.0, 110.0, 14.0],  # 3 d, photo 0: inside c
        [0.0, 50.0, 20.0, 80.0],  # 4 e, photo 1
        [60.0, 50.0, 80.0, 80.0],  # 5 f, photo 1
    ]
)
SCORES = np.array([0.9, 0.8, 0.5, 0.6, 0.2, 0.4])
OWNER = np.array([0, 0, 0, 0, 1, 1])


def test_select_people_merges_overlapping_candidates_keeping_the_likelier() -> None:
    kept = select_people(BOXES, SCORES, OWNER, [0.0, 0.0, 0.0], SearchConfig())
    assert [k.tolist() for k in kept] == [[0, 3], [5, 4], []]  # b merged into a, c into d; photo 2 has none
    assert all(k.dtype == np.int64 for k in kept)
    loose = SearchConfig(person_overlap=0.9, person_inside=1.0)  # nothing overlaps this much
    assert select_people(BOXES, SCORES, OWNER, [0.0, 0.0], loose)[0].tolist() == [0, 1, 3, 2]


def test_select_people_thresholds_each_photo_and_caps_the_count() -> None:
    search = SearchConfig()
    assert [k.tolist() for k in select_people(BOXES, SCORES, OWNER, [0.7, 0.3], search)] == [[0], [5]]
    assert [k.tolist() for k in select_people(BOXES, SCORES, OWNER, [0.95, 0.4], search)] == [[], [5]]  # >=
    assert [k.tolist() for k in select_people(BOXES, SCORES, OWNER, [0.0, 0.0], search, max_people=1)] == [[0], [5]]
    # None: the likeliest only (scores that are not probabilities, or a given box), whatever its score
    assert [k.tolist() for k in select_people(BOXES, -SCORES, OWNER, [None, None], search)] == [[2], [4]]


def test_the_scorer_is_silent_without_a_calibration_and_reads_it_with_one() -> None:
    k = len(JOINT_NAMES)
    scores = np.random.default_rng(0).normal(size=(3, k))
    assert Scorer().joints(SPATIAL, scores) is None
    joints = {DETECTOR: JointCalibration(np.full(k, 0.5), np.zeros(k))}
    verifier = PersonVerifier(np.zeros(NUM_PERSON_FEATURES), np.ones(NUM_PERSON_FEATURES), np.zeros(1), 0.0)
    scorer = Scorer(Calibration(joints, verifier))
    np.testing.assert_allclose(scorer.joints(DETECTOR, scores), 1 / (1 + np.exp(-0.5 * scores)))
    assert scorer.joints(SPATIAL, scores) is None  # no map for that output


@pytest.fixture(scope="module")
def finder(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> PosePredictor:
    """A predictor of :func:`tests.fixtures.torso_finder_model`: it takes red blobs for torsos (uncalibrated)."""
    path = tmp_path_factory.mktemp("people") / "finder.pt"
    save_checkpoint(path, checkpoint_state(torso_finder_model(tiny_config.input_size), tiny_config))
    return PosePredictor.from_checkpoint(path, "cpu")


def test_the_person_search_is_the_scan_and_the_faces_faces_first(finder: PosePredictor) -> None:
    photo = red_blob_photo(60.0, 50.0)
    search = finder.person_search
    assert isinstance(search, PersonSearch) and isinstance(search, ProposalSource)
    config = SearchConfig(max_proposals=20)  # all that do not overlap a better one
    scan = scan_proposals(finder.model.detector, photo, TORSO_PX, config=config)
    found = replace(search, config=config).propose(Photo(photo))
    assert 1 < len(found) < len(scan) and {p.score for p in found} < {p.score for p in scan}  # overlaps dropped
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)  # best first
    assert found[0].score == max(p.score for p in scan) and box_iou(*(p.box for p in found[:2]))[0, 0] <= 0.5
    face = np.array([[120.0, 10.0, 130.0, 20.0]])
    with_face = replace(search, config=config, face_geometry=FaceGeometry()).propose(Photo(photo, 1.0, face))
    assert with_face[0].source == "face" and [p.score for p in with_face[1:]] == [p.score for p in found]
    assert len(search.propose(Photo(photo))) <= SearchConfig().max_proposals  # the default: a few, verified


class FixedSource:
    """A stand-in proposal source (the role a learned person detector will take): the same boxes in every photo."""

    def __init__(self, boxes: list[np.ndarray]) -> None:
        self.boxes = boxes
        self.photos: list[Photo] = []

    def propose(self, photo: Photo) -> list[Proposal]:
        self.photos.append(photo)
        return [Proposal(box.copy(), -float(i), "scan") for i, box in enumerate(self.boxes)]


def test_another_proposal_source_replaces_the_search(finder: PosePredictor) -> None:
    boxes = [np.array([40.0, 30.0, 60.0, 60.0]), np.array([100.0, 60.0, 120.0, 90.0])]
    source = FixedSource(boxes)
    predictor = replace(finder, proposals=source)
    photo = red_blob_photo(110.0, 80.0)
    found = predictor.candidates([(photo, 1.0)], [None])
    assert len(source.photos) == 1 and source.photos[0].image is photo
    assert [p.box.tolist() for p in found.proposals] == [b.tolist() for b in boxes]  # verified, then re-fitted
    assert found.owner.tolist() == [0, 0] and not np.allclose(found.boxes, np.stack(boxes))
    [person] = predictor.predict_image(photo).people  # uncalibrated: the best candidate only
    assert person.source == "scan"
    assert predictor.predict_image(photo, box=boxes[0]).people[0].source == "given"  # a given box needs no source
    assert len(source.photos) == 2


def test_the_top_down_runner_refits_proposals_but_not_given_boxes(checkpoint: Path) -> None:
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu")
    image = draw_image(0, tiny_annotations(), np.random.default_rng(0))
    photos = [Photo(image), Photo(image)]
    box = np.array([60.0, 30.0, 90.0, 75.0])
    given, scan = Proposal(box, 0.0, "given"), Proposal(box, 0.0, "scan")
    runner = predictor.top_down
    assert runner.config == InferenceConfig(decoder=Decoder(sigma=predictor.preprocess.heatmap_sigma))  # float32
    first = runner.predict_boxes(photos[:1], [box])
    assert set(first) == {DETECTOR, SPATIAL}
    found = runner.candidates(photos, [[given], [scan]])
    assert found.owner.tolist() == [0, 1] and found.proposals == [given, scan]
    np.testing.assert_array_equal(found.boxes[0], box)
    np.testing.assert_array_equal(found.boxes[1], box_from_joints(final_joints(first).joints[0], box, image.size))
    again = runner.predict_boxes(photos[:1], [found.boxes[1]])
    for name in (DETECTOR, SPATIAL):
        np.testing.assert_array_equal(found.sets[name].joints[0], first[name].joints[0])
        np.testing.assert_array_equal(found.sets[name].joints[1], again[name].joints[0])
    unrefined = replace(runner, refine_steps=0).candidates(photos, [[given], [scan]])
    np.testing.assert_array_equal(unrefined.boxes, [box, box])
    empty = runner.candidates(photos, [[], []])
    assert empty.boxes.shape == (0, 4) and empty.sets == {} and empty.proposals == []
    assert empty.features().shape == (0, NUM_PERSON_FEATURES + 1)  # a photo where nothing was proposed
    assert torch.float32 == runner.config.dtype
