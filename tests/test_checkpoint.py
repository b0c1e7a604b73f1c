"""Tests for checkpoints: round trips, atomic writes, and refusal of code-running, truncated or foreign files."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnnmrf import files
from cnnmrf.data.format import PreprocessConfig
from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import (
    CHECKPOINT_FORMAT,
    INFERENCE_KEYS,
    checkpoint_state,
    export_weights,
    load_checkpoint,
    load_pose,
    model_from_checkpoint,
    save_checkpoint,
)
from cnnmrf.models.detector import DETECTOR_PRESETS
from cnnmrf.models.pose import PoseConfig, PoseModel
from tests.fixtures import tiny_model

TINY_PREP = PreprocessConfig(input_size=64)


def model_state(model: PoseModel) -> dict[str, Any]:
    """A checkpoint dict as a training run writes it (optimiser and schedule states included)."""
    optimizer = torch.optim.Adam(model.parameters())
    return checkpoint_state(
        model,
        TINY_PREP,
        {"stage": "joint", "epochs": 3},
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": 7},
        epoch=2,
        best_pck=41.5,
        history=[{"epoch": 1, "val_pck@0.2": {"mean": 41.5}}],
        rng={"torch": torch.get_rng_state()},
    )


class MarkerWriter:
    """Unpickling this object opens (creates) a marker file: stands in for any code a tampered checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("with_spatial", [True, False])
def test_round_trip_keeps_weights_records_and_outputs(tmp_path: Path, with_spatial: bool) -> None:
    model = tiny_model(spatial=with_spatial)
    with torch.no_grad():  # make the BatchNorm buffers non-default so they are checked too
        model.detector.head[0][1].running_mean.uniform_()
    path = tmp_path / "run" / "last.pt"  # the folder is created
    original = model_state(model)
    save_checkpoint(path, original)
    state = load_checkpoint(path)
    assert state["format"] == CHECKPOINT_FORMAT
    assert state["epoch"] == 2 and state["best_pck"] == 41.5 and state["joint_names"] == list(JOINT_NAMES)
    assert state["history"] == [{"epoch": 1, "val_pck@0.2": {"mean": 41.5}}]
    assert torch.equal(state["rng"]["torch"], original["rng"]["torch"])
    assert set(state["model"]) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(state["model"][name], tensor), name
    rebuilt = model_from_checkpoint(state)
    assert rebuilt.config == model.config
    assert (rebuilt.spatial is not None) == with_spatial
    image = torch.rand(2, 3, 64, 64)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        for key, value in model(image).items():
            assert torch.equal(rebuilt(image)[key], value), key


def test_map_location_puts_the_tensors_there(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", model_state(tiny_model()))
    state = load_checkpoint(tmp_path / "c.pt", map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())


def test_code_running_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "payload": MarkerWriter(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CnnmrfError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    # Control: an unrestricted unpickler does run the payload, so the refusal above is what protected us.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": MarkerWriter(marker)}, protocol=2))
    with pytest.raises(CnnmrfError):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, model_state(tiny_model()))
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CnnmrfError, match="not a readable checkpoint"):
            load_checkpoint(bad)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x02}q\x00."])
def test_garbage_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CnnmrfError):
        load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    """Random bytes make the unpickler fail in many ways (EOFError, IndexError, KeyError...): all become one error."""
    path = tmp_path / "random.pt"
    for seed in range(40):  # seeds 0-39 include files that raise IndexError and KeyError inside torch.load
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(CnnmrfError, match="random.pt"):
            load_checkpoint(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CnnmrfError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(CnnmrfError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint


@pytest.mark.parametrize("payload", [{"model": {}}, {"format": "someone-else-v3"}, [1, 2, 3], torch.zeros(3)])
def test_foreign_torch_file_is_refused(tmp_path: Path, payload: Any) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CnnmrfError, match="not a cnnmrf checkpoint"):
        load_checkpoint(path)


def test_model_from_inconsistent_checkpoint(tmp_path: Path) -> None:
    state = model_state(tiny_model())
    wrong_joints = {**state, "joint_names": list(reversed(JOINT_NAMES))}
    with pytest.raises(CnnmrfError, match="joints"):
        model_from_checkpoint(wrong_joints)
    other = PoseModel(PoseConfig(detector=DETECTOR_PRESETS["small"]()))
    with pytest.raises(CnnmrfError, match="does not match"):
        model_from_checkpoint({**state, "model": other.state_dict()})
    with pytest.raises(CnnmrfError, match="does not match"):
        model_from_checkpoint({k: v for k, v in state.items() if k != "model_config"})


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, model_state(tiny_model()))
    save_checkpoint(path, {**model_state(tiny_model()), "epoch": 3})  # overwriting too
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 3


def test_failed_write_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, model_state(tiny_model()))
    before = path.read_bytes()

    def disk_full(fd: int) -> None:  # the bytes went out, but the disk cannot hold them
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(CnnmrfError, match=r"cannot write .*last.pt: the disk is full"):
        save_checkpoint(path, {**model_state(tiny_model()), "epoch": 9})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 2


def test_load_pose_gives_the_model_in_eval_mode_and_its_crop_geometry(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(tmp_path / "c.pt", model_state(model))
    loaded, prep = load_pose(tmp_path / "c.pt")
    assert prep == TINY_PREP and not loaded.training
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(image)["spatial"], model(image)["spatial"])
    without = {k: v for k, v in model_state(model).items() if k != "preprocess"}
    save_checkpoint(tmp_path / "bare.pt", without)
    with pytest.raises(CnnmrfError, match="records no valid crop geometry"):
        load_pose(tmp_path / "bare.pt")


def test_export_weights_keeps_what_inference_needs(tmp_path: Path) -> None:
    model = tiny_model()
    source, target = tmp_path / "run" / "best.pt", tmp_path / "weights" / "exported.pt"
    save_checkpoint(source, model_state(model))
    export_weights(source, target)
    original, exported = load_checkpoint(source), load_checkpoint(target)
    assert set(exported) == {"format", *INFERENCE_KEYS}  # no optimiser, schedule or random state
    assert {"optimizer", "scheduler", "rng"} <= set(original)
    for key in ("model_config", "preprocess", "joint_names", "train_config", "epoch", "best_pck", "history"):
        assert exported[key] == original[key], key
    assert set(exported["model"]) == set(original["model"])
    for name, tensor in original["model"].items():
        assert torch.equal(exported["model"][name], tensor), name
    assert target.stat().st_size < source.stat().st_size
    loaded, prep = load_pose(target)
    assert prep == TINY_PREP and loaded.config == model.config
    with pytest.raises(CnnmrfError, match="does not exist"):
        export_weights(tmp_path / "missing.pt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
