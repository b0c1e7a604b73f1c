"""Shared fixtures: a tiny synthetic FLIC copy (folder and FLIC.zip) and its preprocessed HDF5 file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cnnmrf.data.format import PreprocessConfig
from tests.fixtures import TINY_CONFIG, build_tiny_h5, write_tiny_flic, zip_tiny_flic


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
