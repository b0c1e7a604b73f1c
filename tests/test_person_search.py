"""The person detector as `predict`'s proposal source: PersonDetectorSearch, compact exported weights, the bundled
person detector and `predict --search detector`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnmrf.bundled import default_person_checkpoint
from cnnmrf.evaluation.frames import matches_person
from cnnmrf.inference.faces import FaceGeometry
from cnnmrf.inference.person_boxes import detect_people
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.proposals import (
    EVIDENCE_BOXES,
    EVIDENCE_OVERLAP,
    DetectorSearchConfig,
    PersonDetectorSearch,
    Photo,
    ProposalSource,
)
from cnnmrf.inference.search import box_iou
from cnnmrf.models.person import (
    PERSON_PRESETS,
    PersonDetector,
    export_person_weights,
    load_person_checkpoint,
    person_detector_from,
    save_person_checkpoint,
)
from tests.helpers import assert_one_line_error, invoke, text
from tests.test_bundled_search import PEOPLE


def tiny_person(centre_logit: float | None = None, seed: int = 0) -> PersonDetector:
    """A tiny random person detector; ``centre_logit`` sets its centre map's bias (high: confident boxes)."""
    torch.manual_seed(seed)
    model = PersonDetector(PERSON_PRESETS["tiny"]()).eval()
    if centre_logit is not None:
        torch.nn.init.constant_(model.heat.bias, centre_logit)
    return model


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_detector_search_proposes_the_detectors_boxes_in_original_pixels(factor: float) -> None:
    model = tiny_person(3.0)
    config = DetectorSearchConfig(max_boxes=5, min_score=0.0, max_crowd=0, proposal_overlap=1.0, max_proposals=5)
    search = PersonDetectorSearch(model, config=replace(config, fine_side=0))
    assert isinstance(search, ProposalSource) and search.name == "detector"
    image = noise(160, 96)  # decoded with ``factor``: the original is factor times larger
    proposals = search.propose(Photo(image, factor))
    decoded = detect_people(model, image, 5)  # (5, 5) in the decoded image's pixels
    assert [p.source for p in proposals] == ["detector"] * 5
    # pixel centres: decoded pixel p covers original pixels factor * p .. factor * (p + 1) - 1, centre f p + (f - 1) / 2
    expected = decoded[:, :4] * factor + (factor - 1) / 2
    np.testing.assert_allclose(np.stack([p.box for p in proposals]), expected, atol=1e-6)
    np.testing.assert_allclose([p.score for p in proposals], decoded[:, 4], atol=1e-6)
    assert Photo(image, factor).size == (round(160 * factor), round(96 * factor))


def test_detector_search_drops_weak_and_overlapping_boxes_and_adds_faces_first() -> None:
    model = tiny_person(3.0)
    image = noise(128, 96)
    config = DetectorSearchConfig(min_score=0.0, proposal_overlap=1.0, fine_side=0)
    boxes = PersonDetectorSearch(model, config=config).propose(Photo(image))
    assert len(boxes) == 12 and all(b.score > 0.9 for b in boxes)  # max_crowd: every likely box, up to 12
    few = PersonDetectorSearch(model, config=replace(config, crowd_score=0.999)).propose(Photo(image))
    assert [b.score for b in few] == [b.score for b in boxes[: config.max_boxes]]  # the best few whatever their score
    none = DetectorSearchConfig(min_score=0.99, crowd_score=0.99)
    assert PersonDetectorSearch(model, config=none).propose(Photo(image)) == []
    face = np.array([[50.0, 10.0, 62.0, 22.0]])  # a 12 px face: a torso box 35 px tall below it
    geometry = FaceGeometry()
    with_faces = PersonDetectorSearch(
        model, face_geometry=geometry, config=DetectorSearchConfig(min_score=0.0, faces=True, fine_side=0)
    )
    found = with_faces.propose(Photo(image, 1.0, face))
    assert found[0].source == "face" and np.allclose(found[0].box, geometry.torso(face)[0])
    assert [p.source for p in found[1:]] == ["detector"] * (len(found) - 1)
    assert all(p.person == p.score for p in found[1:])  # the detector's evidence for its own boxes: their scores
    decoded = detect_people(model, image, EVIDENCE_BOXES)
    overlap = box_iou(found[0].box[None], decoded[:, :4])[0] >= EVIDENCE_OVERLAP
    assert found[0].person == pytest.approx(decoded[overlap, 4].max(initial=0.0))  # a face's: its best overlapping box
    kept = np.stack([p.box for p in found])
    iou = box_iou(kept, kept)
    assert (iou[np.triu_indices(len(kept), 1)] <= 0.5).all()  # proposal_overlap: no two kept boxes overlap more
    no_faces = PersonDetectorSearch(model, face_geometry=geometry, config=DetectorSearchConfig(faces=False))
    assert all(p.source == "detector" for p in no_faces.propose(Photo(image, 1.0, face)))


def test_detector_search_adds_the_fine_passs_small_sure_boxes() -> None:
    model = tiny_person(3.0)
    image = noise(160, 96)
    coarse = DetectorSearchConfig(max_boxes=1, min_score=0.0, crowd_score=1.0, long_side=160, fine_side=0)
    assert len(PersonDetectorSearch(model, config=coarse).propose(Photo(image))) == 1
    fine = detect_people(model, image, coarse.max_crowd, 320)  # (12, 5) the finer pass's best boxes
    share = float(np.median(fine[:, 3] - fine[:, 1])) / 96  # half of them are shorter than this share of 96 px
    config = replace(coarse, fine_side=320, fine_height=share, fine_score=0.5, proposal_overlap=1.0, max_proposals=50)
    # Only where the first pass hints at small people: never with a hint above every probability, always with 0.
    assert len(PersonDetectorSearch(model, config=replace(config, fine_hint=1.01)).propose(Photo(image))) == 1
    found = PersonDetectorSearch(model, config=replace(config, fine_hint=0.0)).propose(Photo(image))
    small = fine[(fine[:, 3] - fine[:, 1] < share * 96) & (fine[:, 4] >= 0.5)]
    assert 0 < len(small) < len(fine)
    np.testing.assert_allclose(np.stack([p.box for p in found[1:]]), small[:, :4], atol=1e-6)
    assert all(p.source == "detector" and p.person == p.score for p in found)


def test_exported_weights_are_float16_without_optimiser_and_give_the_same_boxes(tmp_path: Path) -> None:
    model = tiny_person(1.0)
    save_person_checkpoint(tmp_path / "run.pt", model, epoch=3, optimizer={"state": {}}, rng={"torch": [1, 2]})
    export_person_weights(tmp_path / "run.pt", tmp_path / "small.pt")
    state = load_person_checkpoint(tmp_path / "small.pt")
    assert "optimizer" not in state and "rng" not in state and state["epoch"] == 3
    assert state["weights_dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in state["model"].values() if t.is_floating_point())
    again = person_detector_from(state)
    assert all(p.dtype == torch.float32 for p in again.parameters())
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], weights, rtol=1e-3, atol=1e-4)
    image = noise(128, 96)
    np.testing.assert_allclose(detect_people(again, image, 3), detect_people(model, image, 3), rtol=1e-2, atol=0.05)


def test_the_bundled_person_detector_finds_grace_hoppers_torso_below_the_portrait() -> None:
    path = default_person_checkpoint()
    assert path.stat().st_size < 2_000_000  # float16 weights, no optimiser state
    model = person_detector_from(load_person_checkpoint(path))
    hopper = PEOPLE["hopper"]
    [box] = detect_people(model, hopper.image("hopper"), k=1)  # its best box
    (left, top), (right, _) = hopper.shoulders
    cx, height = (left + right) / 2, hopper.torso_height
    truth = np.array([[cx - height / 3, top, cx + height / 3, top + height]])  # hand-labelled; the hips out of frame
    assert matches_person(box[None, :4], truth).all() and box[3] > 600, box  # the box reaches below the 600 px photo


def test_predict_search_detector_with_a_person_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    save_person_checkpoint(tmp_path / "person.pt", tiny_person(3.0))
    noise(160, 120).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "photo.png", "-c", checkpoint, "-o", out)
    result = invoke(*args, "--search", "detector", "--person-checkpoint", tmp_path / "person.pt")
    assert result.exit_code == 0, result.output
    assert "(precision fp32, search detector)" in text(result)
    doc = json.loads((out / "photo.json").read_text())
    assert doc["search"] == "detector"
    [person] = doc["people"]  # uncalibrated: the best candidate
    assert person["source"] == "detector" and "found by the person detector" in text(result)
    scan = invoke(*args, "--json", "--search", "scan")
    assert scan.exit_code == 0 and json.loads(scan.stdout)["search"] == "scan"
    wrong = invoke(*args, "--search", "scan", "--person-checkpoint", tmp_path / "person.pt")
    assert_one_line_error(wrong, "--person-checkpoint is for --search detector")
    foreign = invoke(*args, "--search", "detector", "--person-checkpoint", checkpoint)
    assert_one_line_error(foreign, "not a person detector checkpoint")


def test_from_checkpoint_puts_the_person_detector_in_the_proposal_source(checkpoint: Path) -> None:
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu", person=tiny_person())
    search = predictor.person_search
    assert isinstance(search, PersonDetectorSearch) and predictor.search_name == "detector"
    assert search.device == predictor.device and search.dtype == predictor.dtype
    assert search.face_geometry is predictor.face_geometry  # faces follow the predictor's (calibrate replaces them)
    assert PosePredictor.from_checkpoint(checkpoint, "cpu").search_name == "scan"


def test_the_detectors_boxes_are_predicted_as_they_are_unless_refine(checkpoint: Path) -> None:
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu", person=tiny_person(3.0))
    image = noise(160, 120)
    found = predictor.candidates([(image, 1.0)], [None])
    assert found.proposals and all(p.source == "detector" for p in found.proposals)
    np.testing.assert_array_equal(found.boxes, np.stack([p.box for p in found.proposals]))
    refined = replace(predictor, person_config=DetectorSearchConfig(refine=True)).candidates([(image, 1.0)], [None])
    assert not np.allclose(refined.boxes, np.stack([p.box for p in refined.proposals]))  # re-fitted to their torsos
