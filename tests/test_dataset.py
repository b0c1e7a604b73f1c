"""Tests for FlicDataset and the training augmentations: items, geometry round trips, flips and determinism."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cnnmrf.data.dataset import AugmentConfig, FlicDataset, augment_example
from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import FLIP_PERMUTATION, JOINT_NAMES

NO_AUGMENT = AugmentConfig(scale=0.0, rotation=0.0, shift=0.0, flip=0.0, color=0.0)
FLIP_ONLY = AugmentConfig(scale=0.0, rotation=0.0, shift=0.0, flip=1.0, color=0.0)
KEYS = {"image", "heatmaps", "joints", "visible", "row"}


def stored(h5_path: Path, split: str, row: int) -> dict[str, np.ndarray]:
    with h5py.File(h5_path, "r") as h5:
        group = h5[split]
        return {name: group[name][row] for name in ("images", "heatmaps", "joints_input", "visible")}


def test_item_keys_shapes_dtypes(tiny_h5: Path) -> None:
    ds = FlicDataset(tiny_h5, "train", augment=AugmentConfig())
    assert len(ds) == 8
    item = ds[3]
    assert set(item) == KEYS
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["heatmaps"].shape == (10, 16, 16) and item["heatmaps"].dtype == torch.float32
    assert item["joints"].shape == (10, 2) and item["joints"].dtype == torch.float32
    assert item["visible"].shape == (10,) and item["visible"].dtype == torch.bool
    assert item["row"].dtype == torch.int64 and item["row"].item() == 3
    # Invisible joints have all-zero maps; visible ones peak near 1.
    peaks = item["heatmaps"].amax(dim=(-2, -1))
    assert (peaks[~item["visible"]] == 0).all()
    assert (peaks[item["visible"]] > 0.5).all()


def test_test_split_and_row_subset(tiny_h5: Path) -> None:
    assert len(FlicDataset(tiny_h5, "test")) == 4
    ds = FlicDataset(tiny_h5, "train", rows=np.array([5, 2]))
    assert len(ds) == 2
    assert ds[0]["row"].item() == 5 and ds[1]["row"].item() == 2
    ref = stored(tiny_h5, "train", 2)
    np.testing.assert_array_equal(ds[1]["joints"].numpy(), ref["joints_input"])


def test_missing_file_or_split(tiny_h5: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnmrfError, match="does not exist"):
        FlicDataset(tmp_path / "none.h5", "train")
    with pytest.raises(CnnmrfError, match="no 'valid' split"):
        FlicDataset(tiny_h5, "valid")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(CnnmrfError):
        FlicDataset(junk, "train")


@pytest.mark.parametrize("augment", [None, NO_AUGMENT])
def test_unaugmented_item_equals_stored_data(tiny_h5: Path, augment: AugmentConfig | None) -> None:
    ds = FlicDataset(tiny_h5, "train", augment=augment)
    for row in range(len(ds)):
        item, ref = ds[row], stored(tiny_h5, "train", row)
        image = (item["image"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.int16)
        diff = np.abs(image - ref["images"].astype(np.int16))
        if augment is None:
            assert diff.max() == 0
        else:  # an identity warp; the (zero) colour jitter may round a level away
            assert diff.max() <= 1 and diff.mean() < 0.05
        np.testing.assert_allclose(item["joints"].numpy(), ref["joints_input"], atol=1e-4)
        np.testing.assert_array_equal(item["visible"].numpy(), ref["visible"])
        if augment is None:  # the stored maps themselves
            np.testing.assert_array_equal(item["heatmaps"].numpy(), ref["heatmaps"].astype(np.float32))
        else:  # re-encoded from the joints; the file stores them as float16
            np.testing.assert_allclose(item["heatmaps"].numpy(), ref["heatmaps"].astype(np.float32), atol=2e-3)


def dot_image(size: int, x: float, y: float, sigma: float = 1.6) -> np.ndarray:
    """(size, size, 3) uint8 black image with a bright Gaussian dot centred on (x, y) (pixel centres at integers)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    blob = 255.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(blob).astype(np.uint8)[..., None], 3, axis=-1)


def bright_centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of the pixels brighter than 10% of the maximum."""
    grey = image.astype(np.float64).mean(axis=-1)
    weights = np.where(grey > 0.1 * grey.max(), grey, 0.0)
    ys, xs = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_moves_image_and_joints_together(seed: int) -> None:
    """A dot drawn under a joint stays under the joint after any random scale, rotation, shift and flip."""
    size = 64
    rng = np.random.default_rng(100 + seed)
    nose = rng.uniform(22, 42, size=2)  # the nose (index 8) is its own mirror twin, so it keeps its channel
    joints = np.tile(np.array([[size / 2, size / 2]]), (10, 1))
    joints[8] = nose
    assert bright_centroid(dot_image(size, *nose)) == pytest.approx(nose, abs=0.05)  # the measure itself is exact
    config = AugmentConfig(scale=0.25, rotation=30.0, shift=0.05, flip=0.5, color=0.0)
    image, out_joints, visible = augment_example(
        dot_image(size, *nose), joints, np.ones(10, bool), config, np.random.default_rng(seed)
    )
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert visible[8]
    assert np.linalg.norm(bright_centroid(image) - out_joints[8]) < 0.25  # measured: <= 0.06 px


def test_augmentation_flip_is_drawn_both_ways() -> None:
    config = AugmentConfig(scale=0.0, rotation=0.0, shift=0.0, flip=0.5, color=0.0)
    joints = np.full((10, 2), 32.0)
    joints[0], joints[3] = (40.0, 20.0), (24.0, 21.0)  # lsho, rsho
    lsho_x = [
        augment_example(dot_image(64, 40, 20), joints, np.ones(10, bool), config, np.random.default_rng(s))[1][0, 0]
        for s in range(40)
    ]
    # lsho stays at x=40 when not flipped and becomes the mirrored rsho (63 - 24 = 39) when flipped.
    assert set(np.round(lsho_x, 6)) == {40.0, 39.0}
    assert 10 <= sum(x == 39.0 for x in lsho_x) <= 30


def test_forced_flip_swaps_left_and_right(tiny_h5: Path) -> None:
    plain = FlicDataset(tiny_h5, "train")
    flipped = FlicDataset(tiny_h5, "train", augment=FLIP_ONLY)
    lsho, rsho = JOINT_NAMES.index("lsho"), JOINT_NAMES.index("rsho")
    for i in range(len(plain)):
        a, b = plain[i], flipped[i]
        mirrored_image = a["image"].flip(-1)
        assert (b["image"] - mirrored_image).abs().max() <= 1.0 / 255 + 1e-6
        # lsho of the output is the mirrored rsho of the input, and so on for every left/right pair.
        assert b["joints"][lsho, 0].item() == pytest.approx(63.0 - a["joints"][rsho, 0].item(), abs=1e-4)
        assert b["joints"][lsho, 1].item() == pytest.approx(a["joints"][rsho, 1].item(), abs=1e-4)
        perm = list(FLIP_PERMUTATION)
        expected = a["joints"][perm].clone()
        expected[:, 0] = 63.0 - expected[:, 0]
        torch.testing.assert_close(b["joints"], expected, atol=1e-4, rtol=0)
        inside = ((expected >= 0) & (expected <= 63)).all(-1)
        assert torch.equal(b["visible"], a["visible"][perm] & inside)
        # The heatmaps follow: channel k of the output is the mirrored channel perm[k] of the input (the unaugmented
        # ones are the file's float16 maps: equal up to float16 rounding, 2^-11 relative).
        torch.testing.assert_close(b["heatmaps"], a["heatmaps"][perm].flip(-1), atol=5e-4, rtol=0)
    # The fixture's people face the camera, so the person's left shoulder is at the larger x ...
    assert plain[0]["joints"][lsho, 0] > plain[0]["joints"][rsho, 0]
    # ... and after the mirror the (relabelled) left shoulder is still on the larger-x side.
    assert flipped[0]["joints"][lsho, 0] > flipped[0]["joints"][rsho, 0]


def test_augmentation_is_deterministic(tiny_h5: Path) -> None:
    a = FlicDataset(tiny_h5, "train", augment=AugmentConfig(), seed=3)
    b = FlicDataset(tiny_h5, "train", augment=AugmentConfig(), seed=3)
    # Same (seed, epoch, row) -> same item, whatever was read before.
    first = a[5]
    _ = [b[i] for i in (7, 0, 2)]
    for key in KEYS:
        assert torch.equal(first[key], b[5][key]), key
    assert torch.equal(a[5]["image"], first["image"])
    # Another epoch -> another draw; and back to the first epoch -> the first draw again.
    a.set_epoch(1)
    assert not torch.equal(a[5]["image"], first["image"])
    assert not torch.allclose(a[5]["joints"], first["joints"])
    a.set_epoch(0)
    assert torch.equal(a[5]["image"], first["image"])
    # Another seed -> another draw; another row -> another draw.
    c = FlicDataset(tiny_h5, "train", augment=AugmentConfig(), seed=4)
    assert not torch.equal(c[5]["image"], first["image"])


def test_dataloader_with_two_workers(tiny_h5: Path) -> None:
    ds = FlicDataset(tiny_h5, "train", augment=AugmentConfig(), seed=1)
    reference = [ds[i] for i in range(len(ds))]  # opens the file in this process ...
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))  # ... which is not sent to workers: each opens its own
    assert clone._file is None
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [3, 3, 2]
    rows = torch.cat([b["row"] for b in batches])
    assert rows.tolist() == list(range(8))
    images = torch.cat([b["image"] for b in batches])
    heatmaps = torch.cat([b["heatmaps"] for b in batches])
    # Augmentation draws depend on (seed, epoch, row) only, so workers reproduce the single-process items.
    assert torch.equal(images, torch.stack([r["image"] for r in reference]))
    assert torch.equal(heatmaps, torch.stack([r["heatmaps"] for r in reference]))
