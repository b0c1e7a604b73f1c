"""Tests that `cnnmrf predict` writes only complete, consistent output pairs, where it may (never over another
image's outputs, nor over a file it did not write without --force), and shows names as text; and that
`cnnmrf evaluate` checks where it writes before its work."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnmrf import files
from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation import evaluate
from cnnmrf.files import output_folder
from cnnmrf.inference.outputs import ImagePrediction, Person, save_prediction
from cnnmrf.models.checkpoint import checkpoint_state, save_checkpoint
from tests.fixtures import draw_image, tiny_annotations, tiny_model
from tests.helpers import assert_one_line_error, invoke, text

BOX = "70,45,90,75"  # torso box of the person in tiny image 1


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    """A 160x120 photo of one stick-figure person, as a file."""
    draw_image(1, tiny_annotations(), np.random.default_rng(7)).save(tmp_path / "a.jpg")
    return tmp_path / "a.jpg"


def predict(photo: Path, checkpoint: Path, out: Path, *options: str) -> object:
    return invoke("predict", photo, "-c", checkpoint, "--box", BOX, "--out", out, *options)


def test_an_out_that_is_a_file_or_read_only_is_refused_first(
    photo: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(predict(photo, checkpoint, tmp_path / "notes.txt"), "notes.txt is a file; give a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    assert_one_line_error(predict(photo, checkpoint, tmp_path / "out"), "out: the file system is read-only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "notes.txt"]


def test_nan_weights_are_refused_and_a_nan_prediction_writes_nothing(photo: Path, tmp_path: Path) -> None:
    model = tiny_model()
    model.detector.head[2].bias.data[0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", checkpoint_state(model, PreprocessConfig(input_size=64)))
    result = predict(photo, tmp_path / "nan.pt", tmp_path / "out")
    assert_one_line_error(result, "nan.pt holds non-finite weights (NaN or infinity) in detector.head.2.bias")
    person = Person(np.zeros(4), "given", np.full((10, 2), np.nan), np.zeros(10), None, None)
    nan = ImagePrediction("a.jpg", (160, 120), [person])
    with pytest.raises(CnnmrfError, match="non-finite joints"):
        save_prediction(nan, Image.open(photo), tmp_path / "out" / "a.json", tmp_path / "out" / "a_pose.png")
    person.joints, person.score = np.zeros((10, 2)), float("nan")  # a NaN score is refused as well
    with pytest.raises(CnnmrfError, match="non-finite"):
        save_prediction(nan, Image.open(photo), tmp_path / "out" / "a.json", tmp_path / "out" / "a_pose.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "nan.pt"]


def test_an_absurd_box_is_one_line(photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("predict", photo, "-c", checkpoint, "--box=-1e20,-1e20,1e20,1e20", "--out", tmp_path / "o")
    assert_one_line_error(result, "is more than 10 times as tall as the 160x120 image")
    assert not (tmp_path / "o").exists()


def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(
    photo: Path, checkpoint: Path, tmp_path: Path
) -> None:
    with output_folder(tmp_path / "out", "predict"):  # another predict, busy writing there
        result = predict(photo, checkpoint, tmp_path / "out")
        assert_one_line_error(result, "is in use by another cnnmrf command")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".cnnmrf.lock"]
    assert predict(photo, checkpoint, tmp_path / "out").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "a_pose.png"]


def test_a_full_disk_writes_neither_file_of_a_pair(
    photo: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert predict(photo, checkpoint, tmp_path / "out").exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    result = predict(photo, checkpoint, tmp_path / "out", "--flip-test")  # a second run replaces: other joints
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a.jpg: cannot write" in lines[0] and "the disk is full" in lines[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_outputs_get_the_umask_permissions(photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        assert predict(photo, checkpoint, tmp_path / "out").exit_code == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == {"a.json": 0o640, "a_pose.png": 0o640}


def test_escape_codes_in_file_names_are_shown_as_text(photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    sneaky = tmp_path / "\x1b[2J\x1b]0;pwned\x07b.jpg"  # clear the screen, set the window title
    photo.rename(sneaky)
    result = predict(sneaky, checkpoint, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "\x1b[2J" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J\\x1b]0;pwned\\x07b.jpg" in result.output
    missing = invoke("predict", tmp_path / "\x1b[31mgone.jpg", "-c", checkpoint, "--box", BOX, "-o", tmp_path / "o")
    assert "\x1b[31m" not in missing.stderr and "\\x1b[31mgone.jpg" in missing.stderr


def test_evaluate_checks_its_out_before_the_work_and_names_a_full_disk(
    tiny_h5: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(files.tempfile, "mkstemp", read_only)
        patch.setattr(evaluate, "predict_rows", lambda *a, **k: pytest.fail("evaluated before checking --out"))
        result = invoke("evaluate", tiny_h5, "-c", checkpoint, "-o", tmp_path / "e")
        assert_one_line_error(result, f"cannot write {tmp_path / 'e'}: the file system is read-only")

    written = []

    def full_at_the_last_file(fd: int) -> None:  # predictions.json and pck.png fit, metrics.json does not
        written.append(fd)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_at_the_last_file)
    result = invoke("evaluate", tiny_h5, "-c", checkpoint, "-o", tmp_path / "e")
    assert_one_line_error(result, f"cannot write {tmp_path / 'e' / 'metrics.json'}: the disk is full")
    assert not (tmp_path / "e").exists()  # all three files or none (and not the folder it made)


def test_images_with_the_same_name_never_share_or_take_another_images_outputs(
    photo: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """``a/p.jpg b/p.jpg p-2.jpg``: three images, three results (b/p.jpg must not be named after the real p-2.jpg),
    the same names when run again; and a later run's renamed image never lands on an earlier run's prediction."""
    for name in ("a/p.jpg", "b/p.jpg", "p-2.jpg", "c/p.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(photo.read_bytes())
    images = [tmp_path / "a" / "p.jpg", tmp_path / "b" / "p.jpg", tmp_path / "p-2.jpg"]
    out = tmp_path / "out"
    for _ in range(2):  # a second run finds the same names: it replaces its own outputs, adds none
        result = invoke("predict", *images, "-c", checkpoint, "--box", BOX, "-o", out, "--json")
        assert result.exit_code == 0 and result.stderr == "", result.output
        files = {p.stem: json.loads(p.read_text())["file"] for p in out.glob("*.json")}
        assert files == {"p": str(images[0]), "p-3": str(images[1]), "p-2": str(images[2])}
        assert len(list(out.iterdir())) == 6  # and their three PNGs
    # another run: c/p.jpg comes second, so it is renamed; p-2 and p-3 hold other images' predictions: it takes p-4
    result = invoke("predict", images[0], tmp_path / "c" / "p.jpg", "-c", checkpoint, "--box", BOX, "-o", out)
    assert result.exit_code == 0, result.output
    files = {p.stem: json.loads(p.read_text())["file"] for p in out.glob("*.json")}
    assert files == {
        "p": str(images[0]),
        "p-2": str(images[2]),
        "p-3": str(images[1]),
        "p-4": str(tmp_path / "c/p.jpg"),
    }


def test_files_predict_did_not_write_are_replaced_only_with_force(
    photo: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """A hand-made ``cat.json`` beside ``cat.jpg``, evaluate's ``metrics.json`` when ``metrics.jpg`` is predicted into
    its folder, a lone ``dog_pose.png``: each of those images fails with one line naming the file and --force, the
    others are predicted; ``--force`` replaces them."""
    for name in ("cat.jpg", "metrics.jpg", "dog.jpg"):
        (tmp_path / name).write_bytes(photo.read_bytes())
    mine = {
        "cat.json": b'{"cat": "mine"}\n',
        "metrics.json": b'{"format": "cnnmrf-metrics-v1", "pck": 0.9}\n',
        "dog_pose.png": b"\x89PNG my drawing",
    }
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    images = [tmp_path / n for n in ("cat.jpg", "metrics.jpg", "dog.jpg")]
    result = predict(photo, checkpoint, tmp_path)  # the photo's own outputs: a.json, a_pose.png
    assert result.exit_code == 0, result.output
    result = invoke("predict", *images, photo, "-c", checkpoint, "--box", BOX, "-o", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error:") and "--force" in line for line in lines), lines
    for line, name in zip(lines, mine):
        assert f"{tmp_path / name} was not written by cnnmrf predict" in line
    assert "4 image(s): 1 person found in 1, 3 failed" in text(result)  # a.json replaced: predict wrote it
    assert {name: (tmp_path / name).read_bytes() for name in mine} == mine
    assert not (tmp_path / "cat_pose.png").exists() and not (tmp_path / "dog.json").exists()
    result = invoke("predict", *images, "-c", checkpoint, "--box", BOX, "-o", tmp_path, "--force")
    assert result.exit_code == 0 and result.stderr == "", result.output
    for stem in ("cat", "metrics", "dog"):
        assert json.loads((tmp_path / f"{stem}.json").read_text())["file"] == str(tmp_path / f"{stem}.jpg")
        assert (tmp_path / f"{stem}_pose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
