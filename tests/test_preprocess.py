"""Tests for `preprocess_flic`: every field of the HDF5 dataset, inputs (folder / zip), options and failures."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnmrf.data.flic import FlicSource
from cnnmrf.data.format import FORMAT_VERSION, TRANSFORM_NOTE, PreprocessConfig, read_preprocess_config
from cnnmrf.data.geometry import apply_affine, crop_transform, input_to_heatmap
from cnnmrf.data.preprocess import preprocess_flic
from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import JOINT_NAMES
from tests.fixtures import PERSONS, TINY_CONFIG, build_tiny_h5, expected_labels, image_name, write_tiny_flic
from tests.helpers import require_flic

K = len(JOINT_NAMES)
SPLIT_INDEX = {s: [i for i, p in enumerate(PERSONS) if p.split == s] for s in ("train", "test")}


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every dataset (by path) and every attribute (file and datasets) of an HDF5 file."""
    data: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        attrs = {f"/@{k}": _plain(v) for k, v in h5.attrs.items()}

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                data[name] = obj[()]
            attrs.update({f"{name}@{k}": _plain(v) for k, v in obj.attrs.items()})

        h5.visititems(visit)
    return data, attrs


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value


def assert_same_data(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        if a[name].dtype == object:  # variable-length strings: compare values, not pointers
            assert a[name].tolist() == b[name].tolist(), name
        else:
            assert a[name].tobytes() == b[name].tobytes(), name


def apply_each(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """apply_affine with one transform per example: (N, 2, 3) and (N, K, 2) -> (N, K, 2)."""
    return np.stack([apply_affine(t, p) for t, p in zip(transforms, np.asarray(points, np.float64), strict=True)])


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


@pytest.fixture()
def flic_copy(tmp_path: Path) -> Path:
    """A fresh, writable tiny FLIC copy (to break on purpose)."""
    return write_tiny_flic(tmp_path / "FLIC")


# --- the dataset's contents -----------------------------------------------------------------------------------------


def test_split_sizes_and_shapes(tiny_h5: Path) -> None:
    with h5py.File(tiny_h5, "r") as h5:
        assert list(h5) == ["train", "test"]
        for split, n in (("train", 8), ("test", 4)):
            g = h5[split]
            assert g["images"].shape == (n, 64, 64, 3) and g["images"].dtype == np.uint8
            assert g["heatmaps"].shape == (n, K, 16, 16) and g["heatmaps"].dtype == np.float16
            assert g["joints"].shape == (n, K, 2) and g["joints"].dtype == np.float32
            assert g["joints_input"].shape == (n, K, 2) and g["joints_input"].dtype == np.float32
            assert g["visible"].shape == (n, K) and g["visible"].dtype == bool
            assert g["transform"].shape == (n, 2, 3) and g["transform"].dtype == np.float64
            assert g["torsobox"].shape == (n, 4)
            assert g["index"].shape == (n,) and g["file"].shape == (n,)


def test_index_file_torsobox_and_transform(tiny_h5: Path, tiny_flic: Path) -> None:
    examples = FlicSource(tiny_flic).examples()
    with h5py.File(tiny_h5, "r") as h5:
        for split, indices in SPLIT_INDEX.items():
            g = h5[split]
            assert g["index"][:].tolist() == indices
            assert [f.decode() for f in g["file"][:]] == [image_name(PERSONS[i].image) for i in indices]
            for row, i in enumerate(indices):
                p = PERSONS[i]
                box = np.array([p.cx - p.height / 3, p.cy - p.height / 2, p.cx + p.height / 3, p.cy + p.height / 2])
                np.testing.assert_allclose(g["torsobox"][row], box, rtol=1e-5)
                np.testing.assert_allclose(g["transform"][row], crop_transform(examples[i].torsobox, 64, 3.0))
                scale = 64 / (3.0 * p.height)
                np.testing.assert_allclose(g["transform"][row, 0, 0], scale, rtol=1e-5)
                np.testing.assert_allclose(apply_affine(g["transform"][row], [p.cx, p.cy]), [31.5, 31.5], atol=1e-3)


def test_joints_are_observer_centric_labels(tiny_h5: Path) -> None:
    want = expected_labels(observer=True)
    raw = expected_labels(observer=False)
    back = [i for i, p in enumerate(PERSONS) if p.pose == "back"]
    assert back and all(not np.allclose(want[i], raw[i]) for i in back)
    with h5py.File(tiny_h5, "r") as h5:
        for split, indices in SPLIT_INDEX.items():
            np.testing.assert_allclose(h5[split]["joints"][:], want[indices], rtol=1e-6, atol=1e-4)
        # After the swap, "left" is on the image right for every example, the one seen from behind included.
        for split in SPLIT_INDEX:
            j = h5[split]["joints"][:]
            assert (j[:, 0, 0] > j[:, 3, 0]).all()  # lsho right of rsho on screen


def test_person_centric_keeps_raw_labels(tiny_flic: Path, tmp_path: Path) -> None:
    config = PreprocessConfig(**{**vars(TINY_CONFIG), "observer_centric": False})
    out = build_tiny_h5(tiny_flic, tmp_path / "raw.h5", config)
    raw = expected_labels(observer=False)
    with h5py.File(out, "r") as h5:
        assert not h5.attrs["observer_centric"]
        assert json.loads(h5.attrs["config"])["observer_centric"] is False
        for split, indices in SPLIT_INDEX.items():
            np.testing.assert_allclose(h5[split]["joints"][:], raw[indices], rtol=1e-6, atol=1e-4)
            t = h5[split]["transform"][:]
            np.testing.assert_allclose(h5[split]["joints_input"][:], apply_each(t, raw[indices]), atol=1e-3)


def test_joints_input_and_visibility(tiny_h5: Path) -> None:
    with h5py.File(tiny_h5, "r") as h5:
        for split, indices in SPLIT_INDEX.items():
            g = h5[split]
            t, joints, ji, vis = g["transform"][:], g["joints"][:], g["joints_input"][:], g["visible"][:]
            np.testing.assert_allclose(ji, apply_each(t, joints), atol=1e-3)
            inside = ((ji >= 0) & (ji <= 63)).all(axis=-1)
            assert vis.tolist() == inside.tolist()
            for row, i in enumerate(indices):
                if PERSONS[i].pose == "reach":  # left wrist stretched outside the crop
                    assert not vis[row, JOINT_NAMES.index("lwri")] and vis[row].sum() == K - 1
                else:
                    assert vis[row].all()
        assert (~h5["train/visible"][:]).sum() == 1


def test_heatmap_peaks_sit_on_joints(tiny_h5: Path) -> None:
    with h5py.File(tiny_h5, "r") as h5:
        for split in SPLIT_INDEX:
            g = h5[split]
            hm, vis = g["heatmaps"][:].astype(np.float32), g["visible"][:]
            target = input_to_heatmap(g["joints_input"][:], TINY_CONFIG.heatmap_stride)  # (N, K, 2)
            n = hm.shape[0]
            flat = hm.reshape(n, K, -1)
            ys, xs = np.unravel_index(flat.argmax(axis=-1), (16, 16))
            peak = np.stack([xs, ys], axis=-1)
            assert (np.abs(peak - target)[vis] <= 1.0).all()
            assert (np.abs(peak - np.round(target))[vis] == 0).all()  # argmax = nearest heatmap pixel
            np.testing.assert_allclose(flat.max(axis=-1)[vis], 1.0, atol=0.15)  # peak ~1 at the sampled pixel
            assert not hm[~vis].any()  # invisible joints: all-zero maps
            # Gaussian of sigma 1.5 heatmap px: value at the target's nearest pixel is exp(-d^2 / (2 sigma^2)).
            d2 = ((np.round(target) - target) ** 2).sum(-1)
            np.testing.assert_allclose(flat.max(axis=-1)[vis], np.exp(-d2 / (2 * 1.5**2))[vis], atol=2e-3)


def test_images_show_the_joint_dots(tiny_h5: Path) -> None:
    """The synthetic frames carry a white dot on every labelled part: the crop must put it under joints_input."""
    ys, xs = np.mgrid[0:64, 0:64]
    with h5py.File(tiny_h5, "r") as h5:
        for split in SPLIT_INDEX:
            g = h5[split]
            images = g["images"][:].astype(np.float64).mean(axis=-1)
            ji, vis = g["joints_input"][:], g["visible"][:]
            assert images.mean() < 100  # mostly dark background
            for n in range(images.shape[0]):
                for k in range(K - 1):  # the torso joint is a mean of parts, not drawn
                    if vis[n, k]:
                        near = np.hypot(xs - ji[n, k, 0], ys - ji[n, k, 1]) <= 1.0
                        assert images[n][near].max() > 200, (split, n, JOINT_NAMES[k])


def test_attributes_record_the_config_and_provenance(tiny_h5: Path) -> None:
    with h5py.File(tiny_h5, "r") as h5:
        assert h5.attrs["format_version"] == FORMAT_VERSION
        assert json.loads(h5.attrs["joint_names"]) == list(JOINT_NAMES)
        config = json.loads(h5.attrs["config"])
        assert config == {
            "input_size": 64,
            "crop_scale": 3.0,
            "heatmap_stride": 4,
            "heatmap_sigma": 1.5,
            "observer_centric": True,
        }
        assert read_preprocess_config(h5) == TINY_CONFIG
        assert h5.attrs["input_size"] == 64 and h5.attrs["heatmap_stride"] == 4
        assert list(h5.attrs["heatmap_size"]) == [16, 16]
        assert "gaussian" in h5.attrs["heatmap_kernel"] and "sigma=1.5" in h5.attrs["heatmap_kernel"]
        assert h5.attrs["transform"] == TRANSFORM_NOTE
        assert h5.attrs["command"] == "pytest tiny_h5"
        assert h5.attrs["source"] == "FLIC"
        assert bool(h5.attrs["observer_centric"])


# --- inputs and options ---------------------------------------------------------------------------------------------


def test_zip_input_gives_identical_arrays(tiny_flic_zip: Path, tiny_h5: Path, tmp_path: Path) -> None:
    out = build_tiny_h5(tiny_flic_zip, tmp_path / "from_zip.h5", command="pytest tiny_h5")
    data_zip, attrs_zip = read_all(out)
    data_dir, attrs_dir = read_all(tiny_h5)
    assert_same_data(data_zip, data_dir)
    assert attrs_zip.pop("/@source") == "FLIC.zip"
    attrs_dir.pop("/@source")
    assert attrs_zip == attrs_dir


def test_limit_splits_proportionally(tiny_flic: Path, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    out = tmp_path / "limit.h5"
    report = preprocess_flic(
        tiny_flic, out, TINY_CONFIG, workers=1, limit=6, on_progress=lambda done, total: progress.append((done, total))
    )
    assert report.counts == {"train": 4, "test": 2} and not report.bad
    assert progress == [(i, 6) for i in range(1, 7)]
    with h5py.File(out, "r") as h5:
        assert h5["train/index"][:].tolist() == [0, 1, 3, 4]  # the first train and test examples, in order
        assert h5["test/index"][:].tolist() == [2, 5]
        assert h5["train/images"].shape[0] == 4 and h5["test/heatmaps"].shape[0] == 2
    # A limit above the number of examples keeps everything.
    report = preprocess_flic(tiny_flic, tmp_path / "all.h5", TINY_CONFIG, workers=1, limit=100)
    assert report.counts == {"train": 8, "test": 4}


def test_two_runs_give_identical_content(tiny_flic: Path, tiny_h5: Path, tmp_path: Path) -> None:
    out = build_tiny_h5(tiny_flic, tmp_path / "again.h5", command="pytest tiny_h5")
    data_a, attrs_a = read_all(tiny_h5)
    data_b, attrs_b = read_all(out)
    assert_same_data(data_a, data_b)
    assert attrs_a == attrs_b


def test_worker_processes_give_identical_content(tiny_flic: Path, tiny_h5: Path, tmp_path: Path) -> None:
    out = build_tiny_h5(tiny_flic, tmp_path / "pool.h5", workers=2, command="pytest tiny_h5")
    data_a, attrs_a = read_all(tiny_h5)
    data_b, attrs_b = read_all(out)
    assert_same_data(data_a, data_b)
    assert attrs_a == attrs_b


def test_refuses_to_overwrite_without_force(tiny_flic: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.h5"
    out.write_bytes(b"precious")
    with pytest.raises(CnnmrfError, match="already exists"):
        preprocess_flic(tiny_flic, out, TINY_CONFIG, workers=1)
    assert out.read_bytes() == b"precious"
    assert no_temp_files(tmp_path)
    report = preprocess_flic(tiny_flic, out, TINY_CONFIG, workers=1, force=True)
    assert report.counts == {"train": 8, "test": 4}
    with h5py.File(out, "r") as h5:
        assert h5["train/images"].shape[0] == 8
    assert no_temp_files(tmp_path)


def test_two_preprocesses_into_one_file_at_once_one_is_refused(
    tiny_flic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second preprocess starts while the first writes (past its checks, as if started together): it is refused with
    one error, and the file is the first's."""
    from cnnmrf.data import preprocess

    out, second = tmp_path / "flic.h5", {}
    real = preprocess._example_values

    def values_while_another_starts(*args: object) -> dict:
        if "error" not in second:
            second["error"] = None
            with pytest.raises(CnnmrfError, match="being written by another cnnmrf command") as err:
                preprocess_flic(tiny_flic, out, TINY_CONFIG, workers=1, limit=3, force=True)
            second["error"] = err
        return real(*args)

    monkeypatch.setattr(preprocess, "_example_values", values_while_another_starts)
    report = preprocess_flic(tiny_flic, out, TINY_CONFIG, workers=1)
    assert second["error"] is not None and report.counts == {"train": 8, "test": 4}
    with h5py.File(out, "r") as h5:
        assert h5["train/images"].shape[0] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flic.h5"]  # no lock or temporary file left


def test_output_folder_is_created(tiny_flic: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "flic.h5"
    preprocess_flic(tiny_flic, out, TINY_CONFIG, workers=1, limit=3)
    assert out.is_file()


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_bad_image_fails_naming_the_file(flic_copy: Path, tmp_path: Path, damage: str) -> None:
    bad = flic_copy / "images" / image_name(1)
    if damage == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    else:
        bad.unlink()
    out = tmp_path / "out" / "flic.h5"
    with pytest.raises(CnnmrfError) as info:
        preprocess_flic(flic_copy, out, TINY_CONFIG, workers=1)
    message = str(info.value)
    assert image_name(1) in message and "--skip-bad" in message
    assert ("missing" in message) == (damage == "missing")
    assert not out.parent.exists()  # nothing left: no file, no temporary, not the folder the run created


def test_skip_bad_drops_and_counts_bad_examples(flic_copy: Path, tiny_h5: Path, tmp_path: Path) -> None:
    (flic_copy / "images" / image_name(0)).unlink()  # image 0 holds examples 0 (train) and 7 (train)
    corrupt = flic_copy / "images" / image_name(7)  # example 8 (test)
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    out = tmp_path / "skip.h5"
    report = preprocess_flic(flic_copy, out, TINY_CONFIG, workers=1, skip_bad=True)
    assert sorted(f for f, _ in report.bad) == sorted([image_name(0), image_name(0), image_name(7)])
    assert report.counts == {"train": 6, "test": 3}
    assert no_temp_files(tmp_path)
    kept = {"train": [1, 3, 4, 6, 9, 10], "test": [2, 5, 11]}
    with h5py.File(out, "r") as h5, h5py.File(tiny_h5, "r") as ref:
        for split, indices in kept.items():
            assert h5[split]["index"][:].tolist() == indices
            rows = [SPLIT_INDEX[split].index(i) for i in indices]
            for name in ref[split]:
                assert h5[split][name].shape[0] == len(indices), name
                assert h5[split][name].dtype == ref[split][name].dtype, name  # shrinking keeps dtypes
                np.testing.assert_array_equal(h5[split][name][:], ref[split][name][rows], err_msg=name)


def test_skip_bad_with_all_test_images_bad_leaves_empty_split(flic_copy: Path, tmp_path: Path) -> None:
    for i in SPLIT_INDEX["test"]:
        path = flic_copy / "images" / image_name(PERSONS[i].image)
        if path.exists():
            path.unlink()
    out = tmp_path / "empty_test.h5"
    report = preprocess_flic(flic_copy, out, TINY_CONFIG, workers=1, skip_bad=True)
    assert report.counts["test"] == 0
    with h5py.File(out, "r") as h5:
        assert h5["test/images"].shape == (0, 64, 64, 3)
        assert h5["test/joints"].shape == (0, K, 2)


def test_missing_or_bad_annotations(flic_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnmrfError, match="does not exist"):
        preprocess_flic(tmp_path / "nowhere", tmp_path / "x.h5", TINY_CONFIG)
    (flic_copy / "examples.mat").write_bytes(b"garbage, not a mat file")
    with pytest.raises(CnnmrfError, match="examples.mat"):
        preprocess_flic(flic_copy, tmp_path / "x.h5", TINY_CONFIG)
    (flic_copy / "examples.mat").unlink()
    with pytest.raises(CnnmrfError, match="no examples.mat"):
        preprocess_flic(flic_copy, tmp_path / "x.h5", TINY_CONFIG)
    assert not (tmp_path / "x.h5").exists()


# --- the real FLIC copy ---------------------------------------------------------------------------------------------


def test_real_flic_subset(tmp_path: Path) -> None:
    flic = require_flic()  # skips, saying where it looked, without the real FLIC copy
    out = tmp_path / "flic40.h5"
    config = PreprocessConfig()
    report = preprocess_flic(flic, out, config, workers=1, limit=40)
    assert report.counts == {"train": 32, "test": 8} and not report.bad
    stride = config.heatmap_stride
    hh, hw = config.heatmap_size
    with h5py.File(out, "r") as h5:
        for split, n in (("train", 32), ("test", 8)):
            g = h5[split]
            assert g["images"].shape == (n, 128, 128, 3)
            vis = g["visible"][:]
            assert vis.mean() > 0.9
            hm = g["heatmaps"][:].astype(np.float32).reshape(n, K, -1)
            ys, xs = np.unravel_index(hm.argmax(axis=-1), (hh, hw))
            target = input_to_heatmap(g["joints_input"][:], stride)
            assert (np.abs(np.stack([xs, ys], -1) - target)[vis] <= 1.0).all()
            assert not hm[~vis].any()
            np.testing.assert_allclose(g["joints_input"][:], apply_each(g["transform"][:], g["joints"][:]), atol=1e-3)
            # Observer-centric labels: the left shoulder is never left of the right one with both other arm pairs.
            j = g["joints"][:]
            assert not (j[:, [0, 1, 2], 0] < j[:, [3, 4, 5], 0]).all(axis=-1).any()
            assert g["images"][:].std() > 10  # real pixels, not a blank render
