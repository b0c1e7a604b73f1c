"""Tests for the command line: help texts, `cnnmrf preprocess` successes and one-line failures, the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import cnnmrf
from cnnmrf.joints import JOINT_NAMES
from tests.fixtures import image_name, write_tiny_flic
from tests.helpers import COMMANDS, assert_one_line_error, invoke, text

TINY_OPTIONS = ["--input-size", "64", "--heatmap-stride", "4", "--sigma", "1.5", "--workers", "1"]


def test_help_lists_all_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS), result.output


def test_predict_and_calibrate_help_document_their_options() -> None:
    output = text(invoke("predict", "--help"))
    for option in ("--min-score", "--max-people", "--box", "--json", "--out", "--force"):
        assert option in output
    output = text(invoke("calibrate", "--help"))
    for option in ("--flic", "--out", "--checkpoint", "--max-frames", "--clutter", "--max-false-rate", "--force"):
        assert option in output


def test_no_arguments_shows_help_as_a_usage_error() -> None:
    result = invoke()
    assert result.exit_code == 2
    assert "Usage" in result.output and "preprocess" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"cnnmrf {command}" in result.output and "Usage" in result.output
    assert "--debug" in result.output  # after the command's name too


def test_preprocess_help_documents_options() -> None:
    output = invoke("preprocess", "--help").output
    for option in (
        "--out",
        "--person-centric",
        "--input-size",
        "--crop-scale",
        "--heatmap-stride",
        "--sigma",
        "--workers",
        "--limit",
        "--skip-bad",
        "--force",
    ):
        assert option in output


def test_preprocess_missing_input(tmp_path: Path) -> None:
    result = invoke("preprocess", tmp_path / "nowhere", "--out", tmp_path / "x.h5")
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "x.h5").exists()


def test_preprocess_folder_without_examples_mat(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("preprocess", tmp_path / "empty", "--out", tmp_path / "x.h5")
    assert_one_line_error(result, "no examples.mat")
    assert not (tmp_path / "x.h5").exists()


def test_preprocess_existing_output_needs_force(tiny_flic: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.h5"
    out.write_bytes(b"keep me")
    result = invoke("preprocess", tiny_flic, "--out", out, *TINY_OPTIONS)
    assert_one_line_error(result, "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    result = invoke("preprocess", tiny_flic, "--out", out, *TINY_OPTIONS, "--force", "--limit", "3")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as h5:
        assert h5["train/images"].shape[0] + h5["test/images"].shape[0] == 3


def test_preprocess_corrupt_jpeg(tmp_path: Path) -> None:
    flic = write_tiny_flic(tmp_path / "FLIC")
    bad = flic / "images" / image_name(2)
    bad.write_bytes(bad.read_bytes()[:300])
    out = tmp_path / "out.h5"
    result = invoke("preprocess", flic, "--out", out, *TINY_OPTIONS)
    assert_one_line_error(result, image_name(2), "--skip-bad")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    # With --skip-bad the run succeeds and reports what it dropped.
    result = invoke("preprocess", flic, "--out", out, *TINY_OPTIONS, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert f"skipped {image_name(2)}" in text(result) and "1 skipped" in text(result)
    with h5py.File(out, "r") as h5:
        assert h5["test/images"].shape[0] == 3 and h5["train/images"].shape[0] == 8


def test_preprocess_bad_option_value_is_a_usage_error(tiny_flic: Path, tmp_path: Path) -> None:
    result = invoke("preprocess", tiny_flic, "--out", tmp_path / "x.h5", "--input-size", "4")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.h5").exists()


def test_preprocess_success(tiny_flic: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "flic.h5"
    result = invoke("preprocess", tiny_flic, "--out", out, *TINY_OPTIONS, "--crop-scale", "2.5")
    assert result.exit_code == 0, result.output
    summary = text(result)
    assert "wrote" in summary and "flic.h5" in summary and "(8 train, 4 test examples, 0 skipped)" in summary
    assert result.stderr == ""
    with h5py.File(out, "r") as h5:
        assert h5["train/images"].shape == (8, 64, 64, 3)
        assert h5["test/heatmaps"].shape == (4, 10, 16, 16)
        config = json.loads(h5.attrs["config"])
        assert config == {
            "input_size": 64,
            "crop_scale": 2.5,
            "heatmap_stride": 4,
            "heatmap_sigma": 1.5,
            "observer_centric": True,
        }
        assert h5.attrs["command"].startswith("cnnmrf")


def test_preprocess_zip_and_person_centric(tiny_flic_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "zip.h5"
    result = invoke("preprocess", tiny_flic_zip, "--out", out, *TINY_OPTIONS, "--person-centric", "--limit", "6")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as h5:
        assert h5.attrs["source"] == "FLIC.zip"
        assert not h5.attrs["observer_centric"]
        assert h5["train/index"][:].tolist() == [0, 1, 3, 4] and h5["test/index"][:].tolist() == [2, 5]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_flag_shows_the_traceback_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    args = ["preprocess", tmp_path / "nowhere", "--out", tmp_path / "x.h5"]
    result = invoke("--debug", *args) if where == "before" else invoke(*args, "--debug")
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)
    without = invoke(*args)  # the next invocation starts without it
    assert_one_line_error(without, "does not exist")


def installed_script() -> Path:
    """The ``cnnmrf`` console script that ``pip install`` put beside this Python (else the first on PATH)."""
    found = shutil.which("cnnmrf", path=str(Path(sys.executable).parent)) or shutil.which("cnnmrf")
    assert found, "the cnnmrf console script is not installed (pip install -e .)"
    return Path(found)


def test_the_installed_console_script_runs_end_to_end(tmp_path: Path) -> None:
    """The entry point itself (pyproject's [project.scripts]), in a process of its own, as a user runs it."""
    astronaut = Path(cnnmrf.__file__).parent / "assets" / "astronaut.png"
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [str(installed_script()), "predict", "--precision", "fp32"]
    command = [*script, str(astronaut), "--box", "142,270,288,490", "--out", str(out)]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    [person] = doc["people"]  # a given box: exactly one person
    assert person["source"] == "given" and person["box"] == [142, 270, 288, 490] and doc["image_size"] == [512, 512]
    assert list(person["joints"]) == list(JOINT_NAMES)
    assert json.loads((out / "astronaut.json").read_text()) == doc and (out / "astronaut_pose.png").is_file()
    # a second run replaces the outputs predict wrote (here, edited by hand: still a prediction document)
    (out / "astronaut.json").write_text(json.dumps({**doc, "people": []}))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((out / "astronaut.json").read_text()) == doc
    assert "1 image(s): 1 person found in 1, 0 failed; outputs in" in " ".join(done.stdout.split())
    assert "(precision fp32, search detector)" in done.stdout
    # an expected failure: one error line on stderr, exit status 1, no traceback
    missing = [*script, str(astronaut), str(out / "missing.png"), "--out", str(out)]
    done = subprocess.run(missing, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:") and "missing.png: no such file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
