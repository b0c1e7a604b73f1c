"""Tests for `cnnmrf predict`: inputs (files, folders, globs), box and person search, outputs and bad images."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnmrf.bundled import default_checkpoint
from cnnmrf.cli.predict import parse_box
from cnnmrf.cli.predict_files import expand_inputs, output_stems
from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.inference.calibration import NUM_PERSON_FEATURES, Calibration, JointCalibration, PersonVerifier
from cnnmrf.inference.crops import final_joints, predict_rows
from cnnmrf.inference.drawing import SIDE_COLOURS, draw_pose
from cnnmrf.inference.outputs import PREDICTION_FORMAT
from cnnmrf.inference.photos import PosePredictor, check_box
from cnnmrf.inference.search import box_from_joints, box_iou, scan_proposals
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import CALIBRATION_KEY, checkpoint_state, load_checkpoint, save_checkpoint
from cnnmrf.models.detector import DetectorConfig
from tests.fixtures import draw_image, red_blob_photo, tiny_annotations, torso_finder_model
from tests.helpers import assert_one_line_error, invoke, text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOX = "70,45,90,75"  # torso box of the person in tiny image 1 (centre (80, 60), height 30)
BUNDLED = Path(__file__).resolve().parents[1] / "cnnmrf" / "weights" / "flic_small.pt"


@pytest.fixture(scope="module")
def finder(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of :func:`tests.fixtures.torso_finder_model`: it takes red blobs for torsos."""
    path = tmp_path_factory.mktemp("finder") / "finder.pt"
    save_checkpoint(path, checkpoint_state(torso_finder_model(tiny_config.input_size), tiny_config))
    return path


@pytest.fixture(scope="module")
def calibrated(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a calibration set by hand: P(person) = sigmoid(-d), d in [0, 3] the torso joint's
    distance from the box centre in box heights (the person feature before the face flag, clipped), so
    0.047 <= P(person) <= 0.5;
    every joint score sigmoid(0 * peak + 0) = 0.5; default --min-score 0.6 (above every person)."""
    k, f = len(JOINT_NAMES), NUM_PERSON_FEATURES
    weights = np.zeros(f)
    weights[-2] = -1.0
    calibration = Calibration(
        {name: JointCalibration(np.zeros(k), np.zeros(k)) for name in ("detector", "spatial")},
        PersonVerifier(np.zeros(f), np.ones(f), weights, 0.0),
        min_score=0.6,
    )
    state = load_checkpoint(checkpoint)
    del state["format"]
    state[CALIBRATION_KEY] = calibration.to_dict()
    path = tmp_path_factory.mktemp("calibrated") / "calibrated.pt"
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def person() -> Image.Image:
    """A 160x120 synthetic photo of one stick-figure person (tiny FLIC image 1)."""
    return draw_image(1, tiny_annotations(), np.random.default_rng(7))


def check_person(person: dict, size: tuple[int, int]) -> None:
    """One person of a prediction document: its keys, a finite box, joints inside the image, scores in [0, 1]."""
    assert list(person) == ["box", "score", "source", "joints", "joint_scores"]
    assert len(person["box"]) == 4 and np.isfinite(person["box"]).all()
    assert person["source"] in ("given", "scan", "face", "detector")
    assert list(person["joints"]) == list(JOINT_NAMES)
    joints = np.array(list(person["joints"].values()))  # (10, 2)
    assert joints.shape == (10, 2) and np.isfinite(joints).all()
    assert (joints >= 0).all() and (joints <= np.array(size) - 1).all()
    assert (person["score"] is None) == (person["joint_scores"] is None)  # both calibrated, or neither
    if person["score"] is not None:
        assert 0 <= person["score"] <= 1 and list(person["joint_scores"]) == list(JOINT_NAMES)
        assert all(0 <= p <= 1 for p in person["joint_scores"].values())


def read_outputs(out: Path, stem: str, size: tuple[int, int]) -> dict:
    """The JSON written for ``stem``, after checking it and its drawn PNG."""
    data = json.loads((out / f"{stem}.json").read_text())
    assert (
        list(data) == ["format", "file", "image_size", "precision", "search", "people"]
        and data["format"] == PREDICTION_FORMAT
    )
    assert data["image_size"] == list(size)
    for person in data["people"]:
        check_person(person, size)
    png = out / f"{stem}_pose.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as drawn:
        assert drawn.size == size
    return data


def test_predict_files_folders_and_globs_with_a_box(person: Image.Image, checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    (tmp_path / "globbed").mkdir()
    person.save(tmp_path / "one" / "a.jpg")
    person.save(tmp_path / "many" / "b.png")
    person.save(tmp_path / "many" / "c.jpg")
    (tmp_path / "many" / "notes.txt").write_text("not an image, not picked from a folder")
    person.save(tmp_path / "globbed" / "d.jpg")
    out = tmp_path / "out"
    result = invoke(
        "predict",
        tmp_path / "one" / "a.jpg",
        tmp_path / "many",
        f"{tmp_path}/globbed/*.jpg",
        "-c",
        checkpoint,
        "--box",
        BOX,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    for stem in "abcd":
        data = read_outputs(out, stem, person.size)
        [found] = data["people"]  # a given box: exactly one person
        assert found["source"] == "given" and found["box"] == [70, 45, 90, 75]
        assert found["score"] is None and found["joint_scores"] is None  # an uncalibrated checkpoint
        assert data["file"].endswith(f"{stem}.jpg") or data["file"].endswith(f"{stem}.png")
    assert "4 image(s): 4 people found in 4, 0 failed; outputs in" in text(result)
    assert "note:" not in result.output  # the note on uncalibrated checkpoints is about the search only
    one = invoke("predict", tmp_path / "one" / "a.jpg", "-c", checkpoint, "--box", BOX, "--out", out)
    assert one.exit_code == 0 and "lwri" in one.output and "given box" in one.output  # one image: its joint table


def test_predict_search_finds_the_person_where_the_photo_shows_it(finder: Path, tmp_path: Path) -> None:
    """With a detector that sees a torso in red, the searched box follows the red blob around the photo."""
    for cx, cy in ((60.0, 50.0), (110.0, 80.0)):
        red_blob_photo(cx, cy).save(tmp_path / f"blob{cx:.0f}.png")
    result = invoke("predict", tmp_path, "-c", finder, "--search", "scan", "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.strip().splitlines()]
    for doc, (cx, cy) in zip(docs, ((110.0, 80.0), (60.0, 50.0)), strict=True):  # blob110.png sorts first
        assert doc == read_outputs(tmp_path / "out", Path(doc["file"]).stem, (160, 120))
        [found] = doc["people"]  # uncalibrated: the best candidate only
        assert found["source"] == "scan" and found["score"] is None and found["joint_scores"] is None
        x1, y1, x2, y2 = found["box"]
        assert abs((x1 + x2) / 2 - cx) < 1.5 and abs((y1 + y2) / 2 - cy) < 1.5, found["box"]
        assert found["joints"]["torso"] == pytest.approx([cx, cy], abs=1.5)


def test_predict_json_lines_equal_the_written_files(person: Image.Image, checkpoint: Path, tmp_path: Path) -> None:
    person.save(tmp_path / "a.jpg")
    person.convert("L").save(tmp_path / "grey.png")
    person.convert("RGBA").save(tmp_path / "rgba.png")
    args = ("--json", "--out", tmp_path / "out", "--flip-test", "--search", "scan")
    result = invoke("predict", tmp_path, "-c", checkpoint, *args)
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [Path(d["file"]).name for d in docs] == ["a.jpg", "grey.png", "rgba.png"]
    for doc in docs:
        assert doc["image_size"] == [160, 120] and len(doc["people"]) == 1  # uncalibrated: the best candidate only
        assert doc["people"][0]["source"] == "scan" and len(doc["people"][0]["joints"]) == 10
        assert doc == read_outputs(tmp_path / "out", Path(doc["file"]).stem, (160, 120))
    assert text(result).count("note: this checkpoint is not calibrated") == 1  # said once, not in the JSON lines
    assert sum(line.startswith("{") for line in result.stdout.splitlines()) == 3


def test_predict_bad_images_fail_one_by_one(
    person: Image.Image, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    person.save(tmp_path / "good.jpg")
    (tmp_path / "x.jpg").write_text("this is text, not a JPEG")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (200, 150)).save(tmp_path / "huge.png")
    monkeypatch.setattr("cnnmrf.data.images.MAX_PIXELS", 160 * 120)
    files = [tmp_path / n for n in ("missing.jpg", "x.jpg", "good.jpg", "cut.jpg", "huge.png")]
    result = invoke("predict", *files, "-c", checkpoint, "--box", BOX, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error:") for line in lines), result.stderr
    for name, line in zip(("missing.jpg", "x.jpg", "cut.jpg", "huge.png"), lines):
        assert name in line
    assert "no such file" in lines[0] and "pixel limit" in lines[3]
    read_outputs(tmp_path / "out", "good", person.size)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.json", "good_pose.png"]


def test_predict_bad_boxes_are_one_line_errors(person: Image.Image, checkpoint: Path, tmp_path: Path) -> None:
    person.save(tmp_path / "a.jpg")
    for bad in ("1,2,3", "a,b,c,d", "10,10,5,20", "1,2,3,nan"):
        result = invoke("predict", tmp_path / "a.jpg", "-c", checkpoint, "--box", bad, "--out", tmp_path / "o")
        assert_one_line_error(result, "--box")
    result = invoke("predict", tmp_path / "a.jpg", "-c", checkpoint, "--box", "500,500,520,530", "-o", tmp_path / "o")
    assert_one_line_error(result, "outside the 160x120 image")
    assert not (tmp_path / "o").exists()


def test_predict_a_second_run_replaces_the_outputs_and_separates_equal_stems(
    person: Image.Image, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "x").mkdir()
    person.save(tmp_path / "a.jpg")
    person.save(tmp_path / "x" / "a.png")
    out = tmp_path / "out"
    inputs = ["predict", tmp_path / "a.jpg", tmp_path / "x" / "a.png", "-c", checkpoint, "--out", out]
    assert invoke(*inputs, "--box", BOX).exit_code == 0
    assert {p.name for p in out.iterdir()} == {"a.json", "a_pose.png", "a-2.json", "a-2_pose.png"}
    assert json.loads((out / "a-2.json").read_text())["file"] == str(tmp_path / "x" / "a.png")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")  # other files in the folder, even an output's look-alike, are left alone
    (out / "b.json").write_text("{}")
    (out / "b_pose.png").write_bytes(b"not a png")
    result = invoke(*inputs, "--box", "65,40,95,80")
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert "2 image(s): 2 people found in 2, 0 failed" in text(result)
    assert {p.name for p in out.iterdir()} == {*first, "notes.txt", "b.json", "b_pose.png"}
    for stem in ("a", "a-2"):
        data = read_outputs(out, stem, person.size)
        assert data["people"][0]["box"] == [65, 40, 95, 80]  # the second run's
        assert (out / f"{stem}.json").read_bytes() != first[f"{stem}.json"]
        assert (out / f"{stem}_pose.png").read_bytes() != first[f"{stem}_pose.png"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "b.json").read_text() == "{}"
    assert (out / "b_pose.png").read_bytes() == b"not a png"


def test_predict_above_every_person_score_finds_nobody(person: Image.Image, calibrated: Path, tmp_path: Path) -> None:
    """Nobody found is an answer: "people": [], the photo alone as the PNG, "no person found", exit status 0."""
    person.convert("L").save(tmp_path / "grey.png")
    out = tmp_path / "out"
    result = invoke("predict", tmp_path / "grey.png", "-c", calibrated, "--min-score", "0.55", "--json", "-o", out)
    assert result.exit_code == 0 and result.stderr == "", result.output
    doc = json.loads(result.stdout)
    assert doc["people"] == [] and doc == read_outputs(out, "grey", (160, 120))
    with Image.open(out / "grey_pose.png") as drawn, Image.open(tmp_path / "grey.png") as photo:
        assert drawn.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(photo.convert("RGB")))
    result = invoke("predict", tmp_path / "grey.png", "-c", calibrated, "-o", out)  # the checkpoint's default: 0.6
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert "grey.png: no person found ->" in text(result) and "note:" not in result.output
    assert "1 image(s): 0 people found in 1, 0 failed" in text(result)
    assert json.loads((out / "grey.json").read_text())["people"] == []


def test_predict_min_score_and_max_people_pick_the_likeliest_people(
    person: Image.Image, calibrated: Path, tmp_path: Path
) -> None:
    person.save(tmp_path / "a.png")

    def people(*options: str) -> list[dict]:
        args = ("--json", "-o", tmp_path / "out", "--search", "scan", *options)
        result = invoke("predict", tmp_path / "a.png", "-c", calibrated, *args)
        assert result.exit_code == 0 and result.stderr == "", result.output
        doc = json.loads(result.stdout)
        assert doc == read_outputs(tmp_path / "out", "a", (160, 120))
        return doc["people"]

    found = people("--min-score", "0.01")
    scores = [p["score"] for p in found]
    assert len(found) >= 2 and scores == sorted(scores, reverse=True)  # likeliest first
    assert all(0.047 <= s <= 0.5 for s in scores) and {p["source"] for p in found} <= {"scan", "face"}
    assert all(set(p["joint_scores"].values()) == {0.5} for p in found)
    boxes = np.array([p["box"] for p in found])  # the people found do not duplicate each other (IoU <= 0.3)
    assert (box_iou(boxes, boxes)[np.triu_indices(len(boxes), 1)] <= 0.3).all()
    with Image.open(tmp_path / "out" / "a_pose.png") as drawn:
        assert not np.array_equal(np.asarray(drawn), np.asarray(person))  # skeletons drawn
    assert people("--min-score", "0.01", "--max-people", "1") == found[:1]
    assert people("--min-score", "0.01", "--max-people", str(len(found) + 3)) == found
    # a threshold between two people's scores keeps the likelier ones only
    gap = next(i for i in range(len(scores) - 1) if scores[i] - scores[i + 1] > 2e-4)  # clear of the rounding
    assert people("--min-score", f"{(scores[gap] + scores[gap + 1]) / 2:.6f}") == found[: gap + 1]


def test_predict_a_given_box_always_gives_its_one_person(person: Image.Image, calibrated: Path, tmp_path: Path) -> None:
    person.save(tmp_path / "a.png")
    args = ["predict", tmp_path / "a.png", "-c", calibrated, "--json", "-o", tmp_path / "out", "--box", BOX]
    result = invoke(*args, "--min-score", "0.99")
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.stdout)["people"]  # scored, never dropped
    assert found["source"] == "given" and found["box"] == [70, 45, 90, 75]
    assert 0.047 <= found["score"] <= 0.5 and set(found["joint_scores"].values()) == {0.5}
    assert json.loads(invoke(*args, "--max-people", "1").stdout)["people"] == [found]


def test_predict_missing_checkpoint_is_one_line(person: Image.Image, tmp_path: Path) -> None:
    person.save(tmp_path / "a.jpg")
    result = invoke("predict", tmp_path / "a.jpg", "-c", tmp_path / "none.pt")
    assert_one_line_error(result, "does not exist")


def test_predict_with_the_torso_box_matches_dataset_inference(tiny_flic: Path, tiny_h5: Path, checkpoint: Path) -> None:
    """A FLIC image with its torsobox gives the crop preprocess stored, hence evaluate's predictions."""
    predictor = PosePredictor.from_checkpoint(checkpoint, "cpu")
    with h5py.File(tiny_h5, "r") as h5:
        files = list(h5["test"]["file"].asstr()[:])
        boxes = h5["test"]["torsobox"][:].astype(np.float64)
    expected = final_joints(predict_rows(predictor.model, tiny_h5, "test", np.arange(len(files)))).joints
    for file, box, joints in zip(files, boxes, expected):
        prediction, image = predictor.predict_file(tiny_flic / "images" / file, box)
        [found] = prediction.people
        assert found.source == "given" and image.size == (160, 120) and prediction.image_size == (160, 120)
        np.testing.assert_array_equal(found.box, box)
        np.testing.assert_allclose(found.joints, np.clip(joints, 0, [159, 119]), atol=0.05)


# ---- library ----------------------------------------------------------------------------------------------------


class BlobDetector(torch.nn.Module):
    """Stand-in detector: the torso logit is the 4x4-cell mean of red minus green; other joints score 0."""

    def __init__(self) -> None:
        super().__init__()
        self.config = DetectorConfig(input_size=64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torso = F.avg_pool2d(x[:, :1] - x[:, 1:2], 4)  # (B, 1, H/4, W/4)
        return torch.cat([torch.zeros_like(torso).expand(-1, 9, -1, -1), torso], dim=1)  # (B, 10, H/4, W/4)


@pytest.mark.parametrize("decode_factor", [1.0, 2.0])
def test_scan_proposals_map_the_torso_peak_back_to_original_pixels(decode_factor: float) -> None:
    step = int(decode_factor)
    yy, xx = np.mgrid[0:300:step, 0:400:step] + (decode_factor - 1) / 2  # decoded pixel centres, original pixels
    blob = np.exp(-((xx - 260) ** 2 + (yy - 120) ** 2) / (2 * 20.0**2))  # red blob centred at (260, 120)
    pixels = np.stack([90 + 160 * blob, 90 - 80 * blob, 90 - 80 * blob], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    proposals = scan_proposals(BlobDetector(), image, torso_px=64 / 3, decode_factor=decode_factor)
    best = max(proposals, key=lambda p: p.score)
    cx, cy = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
    assert abs(cx - 260) < 1.5 and abs(cy - 120) < 1.5
    height = best.box[3] - best.box[1]
    assert 0.16 * 300 * 0.95 <= height <= 0.9 * 300 * 1.05  # within the searched torso heights
    np.testing.assert_allclose(best.box[2] - best.box[0], height * 2 / 3)
    for proposal in proposals:  # every proposal is in original pixels, inside the image
        x, y = (proposal.box[0] + proposal.box[2]) / 2, (proposal.box[1] + proposal.box[3]) / 2
        assert proposal.source == "scan" and 0 <= x <= 399 and 0 <= y <= 299


def test_parse_and_check_box() -> None:
    np.testing.assert_array_equal(parse_box("1,2.5,30,40"), [1, 2.5, 30, 40])
    for bad in ("1,2,3", "", "1,2,3,4,5", "x,1,2,3", "5,5,1,9"):
        with pytest.raises(CnnmrfError):
            parse_box(bad)
    check_box(np.array([-10.0, -10.0, 20.0, 30.0]), (100, 80))  # partly outside is fine
    with pytest.raises(CnnmrfError, match="outside"):
        check_box(np.array([150.0, 10.0, 170.0, 40.0]), (100, 80))


def test_expand_inputs_and_stems(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "a_pose.png", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    paths, problems = expand_inputs(
        [str(tmp_path), str(tmp_path / "b.jpg"), str(tmp_path / "z*.jpg"), str(tmp_path / "empty"), "missing.jpg"],
        skip_dir=tmp_path,
    )
    assert [p.name for p in paths] == ["a.PNG", "b.jpg", "missing.jpg"]
    assert len(problems) == 2 and "matches" in problems[0] and "no images" in problems[1]
    assert output_stems([Path("x/a.jpg"), Path("y/a.png"), Path("b.jpg"), Path("z/a.gif")]) == ["a", "a-2", "b", "a-3"]
    # a renamed image never takes another input's own name, nor one differing only in case (case-insensitive disks)
    assert output_stems([Path("a/p.jpg"), Path("b/p.jpg"), Path("p-2.jpg")]) == ["p", "p-3", "p-2"]
    assert output_stems([Path("P.jpg"), Path("x/p.png"), Path("P-2.gif")]) == ["P", "p-3", "P-2"]


def test_draw_pose_colours_limbs_by_side() -> None:
    image = Image.new("RGB", (200, 200))
    joints = np.array(
        [
            [130, 60],
            [150, 100],
            [160, 140],
            [70, 60],
            [50, 100],
            [40, 140],
            [120, 150],
            [80, 150],
            [100, 30],
            [100, 100],
        ],
        dtype=np.float64,
    )
    drawn = np.asarray(draw_pose(image, joints))
    assert drawn.shape == (200, 200, 3) and not np.asarray(image).any()
    assert tuple(drawn[80, 140]) == SIDE_COLOURS["left"]  # middle of lsho-lelb
    assert tuple(drawn[80, 60]) == SIDE_COLOURS["right"]  # middle of rsho-relb
    assert tuple(drawn[65, 100]) == SIDE_COLOURS["centre"]  # nose-torso line


def test_bundled_weights_on_the_astronaut(tmp_path: Path) -> None:
    assert default_checkpoint() == BUNDLED and BUNDLED.is_file()  # part of the package: missing is a failure
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    # --min-score 0 --max-people 1: the likeliest candidate, whether the bundled weights are calibrated or not
    args = ["--out", tmp_path / "out", "--json", "--min-score", "0", "--max-people", "1"]
    result = invoke("predict", tmp_path / "astronaut.png", *args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    [found] = doc["people"]
    check_person(found, (512, 512))
    assert found["joints"]["nose"][1] < found["joints"]["torso"][1]  # head above the torso
    assert 100 <= found["joints"]["nose"][0] <= 350
    # with the README's torso box the joints land on her: nose on the face, shoulders on the suit's neck ring
    result = invoke(
        "predict", tmp_path / "astronaut.png", "--out", tmp_path / "box", "--json", "--box", "142,270,288,490"
    )
    [found] = json.loads(result.stdout.strip().splitlines()[-1])["people"]
    assert found["source"] == "given" and found["box"] == [142, 270, 288, 490]
    joints = found["joints"]
    assert 170 <= joints["nose"][0] <= 280 and 80 <= joints["nose"][1] <= 200
    assert joints["rsho"][0] < joints["nose"][0] < joints["lsho"][0]  # facing the camera: her left is image-right
    assert all(200 <= joints[name][1] <= 300 for name in ("lsho", "rsho"))


def test_box_from_joints_fits_the_predicted_torso_and_stays_in_bounds() -> None:
    joints = np.zeros((len(JOINT_NAMES), 2))
    names = {n: i for i, n in enumerate(JOINT_NAMES)}
    joints[[names["lsho"], names["rsho"]]] = [(120, 100), (80, 100)]  # shoulders' midpoint (100, 100)
    joints[[names["lhip"], names["rhip"]]] = [(115, 190), (85, 190)]  # hips' midpoint (100, 190): 90 px below
    joints[names["torso"]] = (100, 145)
    box = box_from_joints(joints, np.array([0.0, 0.0, 60.0, 90.0]), (400, 300))
    np.testing.assert_allclose(box, [70, 100, 130, 190])  # 90 tall, 60 wide, centred on the torso joint
    # the height change is capped at 1.5x of the previous box, and the centre is kept inside the image
    small = box_from_joints(joints, np.array([0.0, 0.0, 20.0, 30.0]), (400, 300))
    assert small[3] - small[1] == pytest.approx(45.0)
    joints[names["torso"]] = (-50, 500)
    outside = box_from_joints(joints, np.array([0.0, 0.0, 60.0, 90.0]), (400, 300))
    assert ((outside[0] + outside[2]) / 2, (outside[1] + outside[3]) / 2) == pytest.approx((0.0, 299.0))


def test_predict_turns_photos_upright_by_their_exif_orientation(
    person: Image.Image, checkpoint: Path, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be rotated 90 degrees clockwise to be upright
    person.save(tmp_path / "phone.jpg", exif=exif)  # stored 160x120, shown 120x160
    result = invoke(
        "predict",
        tmp_path / "phone.jpg",
        "-c",
        checkpoint,
        "--out",
        tmp_path / "out",
        "--json",
        "--box",
        "40,60,80,120",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["image_size"] == [120, 160]
    assert Image.open(tmp_path / "out" / "phone_pose.png").size == (120, 160)


def test_unreadable_bytes_get_a_clean_message(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    result = invoke("predict", tmp_path / "notes.jpg", "-c", checkpoint, "--out", tmp_path / "out")
    line = assert_one_line_error(result, "notes.jpg", "unknown format")
    assert "BytesIO" not in line
