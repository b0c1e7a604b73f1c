"""Tests for the dataset format module: stored heatmaps, compact storage, and reads of rows of a split."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnmrf.data.format import FIELDS, PreprocessConfig, open_dataset, read_split
from cnnmrf.data.geometry import input_to_heatmap
from cnnmrf.data.heatmaps import encode_heatmaps
from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import JOINT_NAMES

K = len(JOINT_NAMES)


@pytest.mark.parametrize("split", ["train", "test"])
def test_stored_heatmaps_equal_the_encoders_output(tiny_h5: Path, tiny_config: PreprocessConfig, split: str) -> None:
    stored = read_split(tiny_h5, split, ("heatmaps", "joints_input", "visible"))
    encoded = encode_heatmaps(
        input_to_heatmap(stored["joints_input"].astype(np.float64), tiny_config.heatmap_stride),
        stored["visible"],
        tiny_config.heatmap_size,
        tiny_config.heatmap_sigma,
    )  # (N, K, H, W) float32
    assert stored["heatmaps"].dtype == np.float16 and stored["heatmaps"].shape == encoded.shape
    # Preprocess encodes the float64 joints before they are stored as float32: at most one float16 step apart.
    np.testing.assert_allclose(stored["heatmaps"].astype(np.float32), encoded, rtol=0, atol=2**-11)
    assert np.mean(stored["heatmaps"] == encoded.astype(np.float16)) > 0.99


def test_heatmaps_are_stored_compressed_one_example_per_chunk(tiny_h5: Path) -> None:
    with h5py.File(tiny_h5, "r") as h5:
        heatmaps = h5["train/heatmaps"]
        assert heatmaps.dtype == np.float16 and heatmaps.chunks == (1, K, 16, 16)
        assert heatmaps.compression == "gzip" and heatmaps.shuffle
        assert heatmaps.id.get_storage_size() < heatmaps.size * 2  # under the raw float16 bytes (1/5 of them on FLIC)


def test_read_keeps_the_order_of_rows_and_repeats(tiny_h5: Path) -> None:
    everything = read_split(tiny_h5, "train")
    assert set(everything) == set(FIELDS) and everything["images"].shape[0] == 8
    rows = np.array([5, 0, 3, 3, 7])
    some = read_split(tiny_h5, "train", ("images", "file", "transform"), rows)
    np.testing.assert_array_equal(some["images"], everything["images"][rows])
    np.testing.assert_array_equal(some["transform"], everything["transform"][rows])
    assert list(some["file"]) == [everything["file"][r] for r in rows] and isinstance(some["file"][0], str)
    contiguous = read_split(tiny_h5, "train", ("joints",), [2, 3, 4])
    np.testing.assert_array_equal(contiguous["joints"], everything["joints"][2:5])
    empty = read_split(tiny_h5, "test", ("joints", "file"), [])
    assert empty["joints"].shape == (0, K, 2) and empty["file"].shape == (0,)
    with open_dataset(tiny_h5) as dataset:
        assert dataset.splits == ("train", "test") and dataset.num_rows("test") == 4
        row = dataset.read_row("test", 2, ("index", "file", "visible"))
        assert row["file"] == read_split(tiny_h5, "test", ("file",))["file"][2] and row["visible"].shape == (K,)


def test_bad_files_and_splits_are_one_clear_error(tiny_h5: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnmrfError, match="does not exist; make it with `cnnmrf preprocess"):
        read_split(tmp_path / "none.h5", "train")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(CnnmrfError, match="not a readable HDF5 file"):
        read_split(tmp_path / "text.h5", "train")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(CnnmrfError, match="not a cnnmrf dataset"):
        read_split(tmp_path / "other.h5", "train")
    with pytest.raises(CnnmrfError, match="no 'valid' split"):
        read_split(tiny_h5, "valid")
