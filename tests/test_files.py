"""Tests for atomic file output: complete files replace the target, failures leave it and no temporary behind."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cnnmrf import files
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_files,
    check_output_file,
    check_output_folder,
    check_outside_package,
    output_file,
    output_folder,
)


def test_atomic_write_replaces_the_target_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.h5"
    target.write_bytes(b"user's dataset")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"user's dataset"
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]


def test_outputs_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        atomic_write_files({tmp_path / "b.png": b"png", tmp_path / "b.json": b"{}"})
    finally:
        os.umask(previous)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == dict.fromkeys(
        ("a.json", "b.png", "b.json"), 0o640
    )


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    dead = _dead_pid()
    stale = tmp_path / f".last.pt.{dead}@{files._HOST}.abc123.tmp"
    live = tmp_path / f".last.pt.{os.getppid()}@{files._HOST}.def456.tmp"  # our parent, alive
    elsewhere = tmp_path / f".last.pt.{dead}@another-host.ghi789.tmp"  # another machine's writer (shared folder)
    old_style = tmp_path / ".last.pt.k2j3h4.tmp"  # written before temporaries named their writer
    for path in (stale, live, elsewhere, old_style):
        path.write_bytes(b"half a checkpoint")
    os.utime(old_style, (0, 0))
    atomic_write_bytes(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", live.name, elsewhere.name])


def _dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def disk_full(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.json").write_bytes(b"old a")
    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(CnnmrfError, match=r"cannot write .*a.json: the disk is full"):
        atomic_write_bytes(tmp_path / "a.json", b"new a")
    with pytest.raises(CnnmrfError, match="the disk is full"):  # a pair: neither file is replaced
        atomic_write_files({tmp_path / "a.json": b"new a", tmp_path / "new" / "b.png": b"new b"})
    assert [(p.name, p.read_bytes()) for p in tmp_path.iterdir()] == [("a.json", b"old a")]


def test_output_checks_name_the_path_and_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CnnmrfError, match="notes.txt is a file; give a folder"):
        check_output_folder(tmp_path / "notes.txt")
    with pytest.raises(CnnmrfError, match="notes.txt is a file"):
        check_output_folder(tmp_path / "notes.txt" / "run")
    with pytest.raises(CnnmrfError, match="already exists; pass --force"):
        check_output_file(tmp_path / "notes.txt", force=False)
    with pytest.raises(CnnmrfError, match="is a folder; give a file name"):
        check_output_file(tmp_path, force=True)
    check_output_file(tmp_path / "notes.txt", force=True)
    check_output_folder(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # checking creates nothing

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)  # root can write anywhere: fake the read-only mount
    with pytest.raises(CnnmrfError, match=r"cannot write .*run: the file system is read-only"):
        check_output_folder(tmp_path / "run")
    with pytest.raises(CnnmrfError, match=r"cannot write .*x.h5: the file system is read-only"):
        check_output_file(tmp_path / "x.h5", force=False)


def test_an_output_folder_is_held_by_one_command_and_removed_if_it_failed_empty(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    with output_folder(run, "predict"):
        with pytest.raises(CnnmrfError, match="in use by another cnnmrf command"):
            with output_folder(run, "predict"):
                pass
    assert [p.name for p in run.iterdir()] == []  # the lock file goes with the lock
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "b" / "c", "train-detector"):
            raise RuntimeError("failed before writing anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_an_output_file_is_held_then_checked_and_its_folders_removed_if_it_failed(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "a" / "calibrated.pt"
    with output_file(target, force=False, command="calibrate") as held:
        assert held == target and target.parent.is_dir() and not target.exists()
        with pytest.raises(CnnmrfError, match=r"calibrated.pt is being written by another cnnmrf command; wait"):
            with output_file(target, force=True, command="calibrate"):
                pass
        atomic_write_bytes(target, b"first")
    assert [p.name for p in target.parent.iterdir()] == ["calibrated.pt"]  # the lock file goes with the lock
    with pytest.raises(CnnmrfError, match="already exists; pass --force"):  # checked once held
        with output_file(target, force=False, command="calibrate"):
            pass
    with output_file(target, force=True, command="calibrate"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError):
        with output_file(tmp_path / "b" / "c" / "x.pt", force=False, command="calibrate"):
            raise RuntimeError("failed before writing anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    with pytest.raises(CnnmrfError, match="is a folder; give a file name"):
        with output_file(tmp_path, force=True, command="calibrate"):
            pass


def test_nothing_is_written_inside_the_installed_package(tmp_path: Path) -> None:
    package = Path(files.__file__).resolve().parent
    for inside in (package / "weights" / "flic_small.pt", package / "new.pt", package):
        with pytest.raises(
            CnnmrfError, match=r"--out .* is inside the installed cnnmrf package .*; write it elsewhere"
        ):
            check_outside_package(inside)
    (tmp_path / "link").symlink_to(package)
    with pytest.raises(CnnmrfError, match="inside the installed cnnmrf package"):
        check_outside_package(tmp_path / "link" / "weights" / "x.pt")
    check_outside_package(tmp_path / "x.pt")
    check_outside_package(package.parent / "runs" / "x.pt")  # beside the package is fine
