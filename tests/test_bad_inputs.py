"""Tests that bad inputs a user can give (broken FLIC copies, foreign or edited datasets and checkpoints, a full disk)
end in one clear error naming the file, and leave nothing behind."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from cnnmrf.data import writer
from cnnmrf.data.dataset import AugmentConfig, FlicDataset
from cnnmrf.data.format import open_dataset
from cnnmrf.errors import CnnmrfError
from cnnmrf.models.checkpoint import checkpoint_state, load_checkpoint, load_pose, save_checkpoint
from tests.fixtures import TINY_CONFIG, image_name, tiny_annotations, tiny_model, write_tiny_flic, zip_tiny_flic
from tests.helpers import assert_one_line_error, invoke


def write_annotations(root: Path, edit: Callable[[list[dict]], None]) -> None:
    """Rewrite ``root/examples.mat`` with the tiny annotations after ``edit`` changed them."""
    records = tiny_annotations()
    edit(records)
    table = np.empty((1, len(records)), dtype=[(f, object) for f in records[0]])
    for i, record in enumerate(records):
        for name, value in record.items():
            table[0, i][name] = value
    scipy.io.savemat(root / "examples.mat", {"examples": table})


@pytest.fixture()
def flic_copy(tmp_path: Path) -> Path:
    """A fresh, writable tiny FLIC copy (to break on purpose)."""
    return write_tiny_flic(tmp_path / "FLIC")


# --- preprocess -----------------------------------------------------------------------------------------------------


def test_a_split_without_examples_is_written_empty(tiny_flic: Path, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        result = invoke("preprocess", tiny_flic, "--out", tmp_path / "one.h5", "--limit", "1", "--workers", "1")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "one.h5").stat().st_mode) == 0o640  # the umask's permissions, not 0600
    with open_dataset(tmp_path / "one.h5") as dataset:
        assert (dataset.num_rows("train"), dataset.num_rows("test")) == (1, 0)


def test_non_finite_labels_are_invisible_and_counted(flic_copy: Path, tmp_path: Path) -> None:
    def edit(records: list[dict]) -> None:
        records[0]["coords"][:, 2] = np.nan  # lwri of example 0 (train)
        records[1]["coords"][0, 0] = np.inf  # lsho of example 1 (train), which the torso joint averages too

    write_annotations(flic_copy, edit)
    result = invoke("preprocess", flic_copy, "--out", tmp_path / "x.h5", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "3 joint label(s) are NaN or infinite" in result.output
    with open_dataset(tmp_path / "x.h5") as dataset:
        train = dataset.read("train", ("heatmaps", "visible", "joints"), [0, 1])
    assert np.isfinite(train["heatmaps"]).all()
    assert not train["visible"][0, 2] and not train["visible"][1, 0] and not train["visible"][1, 9]
    assert train["visible"][0, [0, 1, 3, 4, 5, 6, 7, 8, 9]].all()
    assert np.isnan(train["joints"][1, 0]).all()  # stored as "no label" (NaN), not as infinity
    augmented = FlicDataset(tmp_path / "x.h5", "train", augment=AugmentConfig())  # targets made again, as training does
    assert all(torch.isfinite(augmented[row]["heatmaps"]).all() for row in (0, 1))


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ([np.nan, 1, 20, 30], "not four finite numbers"),
        ([30, 40, 30, 70], "must have x1 < x2"),
        ([5000, 5000, 5020, 5030], "lies outside the 160x120 image"),
    ],
)
def test_a_bad_torso_box_is_a_bad_example(flic_copy: Path, tmp_path: Path, box: list[float], why: str) -> None:
    def edit(records: list[dict]) -> None:
        records[2]["torsobox"] = np.array([box], np.float32)  # example 2: the first test example

    write_annotations(flic_copy, edit)
    result = invoke("preprocess", flic_copy, "--out", tmp_path / "x.h5", "--workers", "1")
    assert_one_line_error(result, image_name(2), why, "--skip-bad")
    assert not (tmp_path / "x.h5").exists()
    result = invoke("preprocess", flic_copy, "--out", tmp_path / "x.h5", "--workers", "1", "--skip-bad")
    assert result.exit_code == 0 and "1 skipped" in result.output
    with open_dataset(tmp_path / "x.h5") as dataset:
        assert 2 not in dataset.read("test", ("index",))["index"]


def lie_about_size(archive: Path, member: str, extra: int) -> None:
    """Make ``member``'s headers state ``extra`` more uncompressed bytes than it holds."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    local = info.header_offset
    size = struct.unpack_from("<I", data, local + 22)[0]
    struct.pack_into("<I", data, local + 22, size + extra)
    central = data.rfind(b"PK\x01\x02" + data[local + 4 : local + 6])  # find the member's central directory entry
    while struct.unpack_from("<I", data, central + 42)[0] != local:
        central = data.rfind(b"PK\x01\x02", 0, central)
    struct.pack_into("<I", data, central + 24, size + extra)
    archive.write_bytes(bytes(data))


def test_a_zip_member_that_lies_about_its_size_is_a_bad_image(tiny_flic: Path, tmp_path: Path) -> None:
    archive = zip_tiny_flic(tiny_flic, tmp_path / "FLIC_lie.zip")
    lie_about_size(archive, f"FLIC/images/{image_name(4)}", 5000)
    result = invoke("preprocess", archive, "--out", tmp_path / "x.h5", "--workers", "1")
    assert_one_line_error(result, image_name(4), "unreadable image", "--skip-bad")
    result = invoke("preprocess", archive, "--out", tmp_path / "x.h5", "--workers", "1", "--skip-bad")
    assert result.exit_code == 0 and "1 skipped" in result.output


def test_a_zip_bomb_is_refused_before_it_is_read(flic_copy: Path, tmp_path: Path) -> None:
    def edit(records: list[dict]) -> None:
        records[3]["filepath"] = "bomb.jpg"

    write_annotations(flic_copy, edit)
    archive = zip_tiny_flic(flic_copy, tmp_path / "FLIC_bomb.zip")
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:  # 65 MB of zeros, 64 KB in the archive
        zf.writestr("FLIC/images/bomb.jpg", bytes(65 * 2**20))
    result = invoke("preprocess", archive, "--out", tmp_path / "x.h5", "--workers", "1")
    assert_one_line_error(result, "bomb.jpg", "more than 64 MB")


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(
    tiny_flic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "flic.h5"
    out.write_bytes(b"the user's previous dataset")

    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            if self.tell() + len(data) > 200_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(writer, "open", lambda path, mode, buffering: FullDisk(path, "w+"), raising=False)
    result = invoke("preprocess", tiny_flic, "--out", out, "--workers", "1", "--force")
    assert_one_line_error(result, f"cannot write {out}: the disk is full")
    assert [(p.name, p.read_bytes()) for p in tmp_path.iterdir()] == [("flic.h5", b"the user's previous dataset")]


def test_an_unwritable_or_wrong_out_is_refused_before_any_work(
    tiny_flic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("preprocess", tiny_flic, "--out", tmp_path / "notes.txt" / "flic.h5")
    assert_one_line_error(result, "notes.txt is a file")
    from cnnmrf import files

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    result = invoke("preprocess", tiny_flic, "--out", tmp_path / "ro" / "flic.h5")
    assert_one_line_error(result, "flic.h5: the file system is read-only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- datasets that look like ours but are not -------------------------------------------------------------------------


def edited_copy(tiny_h5: Path, tmp_path: Path, edit: Callable[[h5py.File], None]) -> Path:
    path = tmp_path / "edited.h5"
    shutil.copy(tiny_h5, path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def _set_config(h5: h5py.File, **changes: Any) -> None:
    h5.attrs["config"] = json.dumps({**json.loads(h5.attrs["config"]), **changes})


DATASET_EDITS: dict[str, tuple[Callable[[h5py.File], None], str]] = {
    "no train group": (lambda h5: h5.__delitem__("train"), "no 'train' split"),
    "no joints_input": (lambda h5: h5["test"].__delitem__("joints_input"), "no 'test/joints_input' dataset"),
    "images of another size": (
        lambda h5: (h5["train"].__delitem__("images"), h5["train"].create_dataset("images", (8, 32, 32, 3), "u1")),
        "'train/images' has shape (8, 32, 32, 3), expected (8, 64, 64, 3)",
    ),
    "rows missing": (
        lambda h5: (h5["train"].__delitem__("visible"), h5["train"].create_dataset("visible", (7, 10), bool)),
        "'train/visible' has shape (7, 10), expected (8, 10)",
    ),
    "strings for numbers": (
        lambda h5: (h5["test"].__delitem__("index"), h5["test"].create_dataset("index", data=["a"] * 4)),
        "'test/index' holds",
    ),
    "an unknown config key": (lambda h5: _set_config(h5, colour="blue"), "unknown colour"),
    "a config of the wrong type": (lambda h5: _set_config(h5, input_size="64"), "input_size is '64'"),
    "a config out of range": (lambda h5: _set_config(h5, crop_scale=-3), "crop_scale is -3"),
    "a config that is no JSON": (lambda h5: h5.attrs.__setitem__("config", "{oops"), "not JSON"),
}


@pytest.mark.parametrize("case", DATASET_EDITS)
def test_a_dataset_is_checked_whole_when_opened(tiny_h5: Path, tmp_path: Path, case: str) -> None:
    edit, why = DATASET_EDITS[case]
    path = edited_copy(tiny_h5, tmp_path, edit)
    with pytest.raises(CnnmrfError) as info:
        open_dataset(path)
    assert str(path) in str(info.value) and why in str(info.value)
    result = invoke("train-detector", path, "--out", tmp_path / "run", "--preset", "tiny")
    assert_one_line_error(result, why)
    assert not (tmp_path / "run").exists()


# --- checkpoints that still unpickle but are not right ----------------------------------------------------------------


def edited_checkpoint(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    state = checkpoint_state(tiny_model(), TINY_CONFIG)
    edit(state)
    save_checkpoint(tmp_path / "edited.pt", state)
    return tmp_path / "edited.pt"


def _nan_weight(state: dict[str, Any]) -> None:
    state["model"]["detector.head.2.weight"][0, 0] = float("nan")


CHECKPOINT_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "NaN weights": (_nan_weight, "non-finite weights (NaN or infinity) in detector.head.2.weight"),
    "model_config a string": (lambda s: s.__setitem__("model_config", "small"), "invalid model config"),
    "input_size 0": (lambda s: s["preprocess"].__setitem__("input_size", 0), "input_size is 0"),
    "crop_scale -3": (lambda s: s["preprocess"].__setitem__("crop_scale", -3.0), "crop_scale is -3.0"),
    "an unknown preprocess key": (lambda s: s["preprocess"].__setitem__("zoom", 2), "unknown zoom"),
    "a detector width of -1": (
        lambda s: s["model_config"]["detector"].__setitem__("head_channels", (64, -1)),
        "detector.head_channels is -1",
    ),
    "epoch a string": (lambda s: s.__setitem__("epoch", "3"), "epoch of the wrong type"),
}


@pytest.mark.parametrize("case", CHECKPOINT_EDITS)
def test_a_checkpoint_is_checked_when_loaded(tmp_path: Path, case: str) -> None:
    edit, why = CHECKPOINT_EDITS[case]
    path = edited_checkpoint(tmp_path, edit)
    with pytest.raises(CnnmrfError) as info:
        load_checkpoint(path)
    assert f"checkpoint {path}" in str(info.value) and why in str(info.value)


def test_predict_and_evaluate_refuse_an_edited_checkpoint_with_the_same_words(tiny_h5: Path, tmp_path: Path) -> None:
    path = edited_checkpoint(tmp_path, CHECKPOINT_EDITS["an unknown preprocess key"][0])
    Image.new("RGB", (64, 48), (90, 80, 70)).save(tmp_path / "a.jpg")
    lines = [
        assert_one_line_error(invoke("predict", tmp_path / "a.jpg", "-c", path, "-o", tmp_path / "p")),
        assert_one_line_error(invoke("evaluate", tiny_h5, "-c", path, "-o", tmp_path / "e")),
    ]
    expected = f"error: checkpoint {path} records an invalid crop geometry (preprocess settings): unknown zoom"
    assert lines == [expected, expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "edited.pt"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (np.random.default_rng(0).bytes(5000), "is not a cnnmrf checkpoint (not a file written by torch.save)"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "is an HDF5 file (a dataset?), not a checkpoint"),
    ],
)
def test_foreign_files_given_as_checkpoints_are_called_what_they_are(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CnnmrfError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} {why}")


def test_objects_other_than_weights_are_named_whole(tmp_path: Path) -> None:
    torch.save({"format": "cnnmrf-checkpoint-v1", "x": zipfile.ZipInfo("a")}, tmp_path / "x.pt")
    with pytest.raises(CnnmrfError) as info:
        load_pose(tmp_path / "x.pt")
    message = str(info.value)
    assert "holds objects other than weights" in message and "zipfile.ZipInfo" in message
    assert message.endswith("was not an allowed global by default.)"), message  # one whole sentence
