"""Tests for atomic file output: complete files replace the target, failures leave it and no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnmrf.files import atomic_path, atomic_write_bytes


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
