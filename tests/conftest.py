"""Shared fixtures: the precision every test runs at, a tiny synthetic FLIC copy (folder and FLIC.zip) and its
preprocessed HDF5 file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cnnmrf import devices
from cnnmrf.data.format import PreprocessConfig
from cnnmrf.devices import Precision
from tests.fixtures import TINY_CONFIG, build_tiny_h5, write_tiny_checkpoint, write_tiny_flic, zip_tiny_flic


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The arithmetic `--precision auto` resolves to in every test, whatever this CPU has: fp32 unless the environment says
# CNNMRF_TEST_PRECISION=bf16 (.ci/run runs the suite once more that way, so the bf16 path is exercised on every
# machine, emulated where the CPU has no bf16 units).
TEST_PRECISION = Precision(os.environ.get("CNNMRF_TEST_PRECISION", "fp32"))


@pytest.fixture(autouse=True)
def pinned_precision(monkeypatch: pytest.MonkeyPatch) -> Precision:
    """Pin what ``auto`` means (in this process) to :data:`TEST_PRECISION` by presenting a CPU with or without bf16
    units; tests that need a precision of their own pass it explicitly."""
    flags = {"avx512_bf16"} if TEST_PRECISION is Precision.bf16 else set()
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=None: set(flags))
    return TEST_PRECISION


@pytest.fixture(scope="session")
def tiny_flic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``examples.mat`` (12 examples: 8 train, 4 test) and ``images/`` (9 JPEGs, 160x120). Read-only."""
    return write_tiny_flic(tmp_path_factory.mktemp("tiny_flic") / "FLIC")


@pytest.fixture(scope="session")
def tiny_flic_zip(tiny_flic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny FLIC copy zipped like FLIC.zip (``FLIC/examples.mat``, ``FLIC/images/*.jpg``). Read-only."""
    return zip_tiny_flic(tiny_flic, tmp_path_factory.mktemp("tiny_flic_zip") / "FLIC.zip")


@pytest.fixture(scope="session")
def tiny_config() -> PreprocessConfig:
    """The PreprocessConfig of ``tiny_h5``: 64 px inputs, crop 3x torso height, stride 4 (16x16 heatmaps)."""
    return PreprocessConfig(**vars(TINY_CONFIG))


@pytest.fixture(scope="session")
def tiny_h5(tiny_flic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HDF5 dataset preprocessed from ``tiny_flic`` with ``tiny_config`` (8 train, 4 test). Shared: don't modify."""
    return build_tiny_h5(tiny_flic, tmp_path_factory.mktemp("tiny_h5") / "flic.h5", command="pytest tiny_h5")


@pytest.fixture(scope="session")
def checkpoint(tiny_config: PreprocessConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector + spatial model checkpoint (random weights) with the geometry of ``tiny_h5``. Shared: don't
    modify."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_config)
