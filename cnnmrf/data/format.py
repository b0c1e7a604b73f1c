"""The HDF5 dataset format (docs/data-format.md): its settings, its layout, and every read and write of the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import JOINT_NAMES

FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "test")
FIELDS: tuple[str, ...] = (
    "images",
    "heatmaps",
    "joints",
    "joints_input",
    "visible",
    "transform",
    "torsobox",
    "index",
    "file",
)
TRANSFORM_NOTE = (
    "transform[n] is a 2x3 affine matrix A mapping original-image pixels p=(x, y) to model-input pixels "
    "A[:, :2] @ p + A[:, 2] (pixel centres at integer coordinates). The crop is a square centred on the FLIC "
    "torsobox centre with side crop_scale * torsobox height, scaled to input_size. Heatmap pixels are "
    "(input + 0.5) / heatmap_stride - 0.5."
)
# The heatmaps are mostly near-zero Gaussian tails: byte-shuffled gzip (readable by any HDF5 library) stores them in
# about a fifth of the space, one example per chunk so that reading one row decompresses one example.
HEATMAP_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@dataclass
class PreprocessConfig:
    """How raw FLIC becomes model inputs and targets (saved in the HDF5 attributes and in every checkpoint)."""

    input_size: int = 128  # side of the square model input, pixels
    crop_scale: float = 3.0  # crop side / FLIC torso-box height (covers >99% of FLIC joints)
    heatmap_stride: int = 4  # model-input pixels per heatmap pixel (the detector's output stride)
    heatmap_sigma: float = 1.5  # std of the target Gaussians, in heatmap pixels
    observer_centric: bool = True  # MODEC's rule: swap arm labels of people seen from behind

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H, W) of the heatmaps."""
        side = self.input_size // self.heatmap_stride
        return side, side


def _layout(n: int, config: PreprocessConfig) -> dict[str, dict[str, Any]]:
    """``create_dataset`` arguments of every dataset of a split of ``n`` examples, in file order."""
    s, k = config.input_size, len(JOINT_NAMES)
    hh, hw = config.heatmap_size
    return {
        "images": {"shape": (n, s, s, 3), "dtype": np.uint8, "chunks": (1, s, s, 3)},
        "heatmaps": {"shape": (n, k, hh, hw), "dtype": np.float16, "chunks": (1, k, hh, hw), **HEATMAP_COMPRESSION},
        "joints": {"shape": (n, k, 2), "dtype": np.float32},
        "joints_input": {"shape": (n, k, 2), "dtype": np.float32},
        "visible": {"shape": (n, k), "dtype": bool},
        "transform": {"shape": (n, 2, 3), "dtype": np.float64},
        "torsobox": {"shape": (n, 4), "dtype": np.float32},
        "index": {"shape": (n,), "dtype": np.int32},
        "file": {"shape": (n,), "dtype": h5py.string_dtype()},
    }


def _create(group: h5py.Group, name: str, spec: dict[str, Any], data: np.ndarray | None = None) -> None:
    """Create one dataset (no timestamps, so equal inputs give equal files); chunked storage needs a row."""
    spec = dict(spec)
    if spec["shape"][0] == 0:  # HDF5 refuses chunks on an empty dataset: store it contiguous, uncompressed
        spec = {"shape": spec["shape"], "dtype": spec["dtype"]}
    group.create_dataset(name, data=data, track_times=False, **spec)


class DatasetWriter:
    """Writes a dataset file: the splits' datasets at their final size, one example at a time, then attributes."""

    def __init__(self, path: Path, counts: dict[str, int], config: PreprocessConfig) -> None:
        """Create ``path`` (overwriting it) with every dataset of every split at its final size.

        Args:
            path: the file to create.
            counts: examples per split (a split not named gets none).
            config: the crop and heatmap geometry, which sets the datasets' shapes.
        """
        self.config = config
        self.counts = dict(counts)
        self.h5 = h5py.File(path, "w", track_order=True)
        for split in SPLITS:
            group = self.h5.create_group(split)
            for name, spec in _layout(self.counts.get(split, 0), config).items():
                _create(group, name, spec)

    def write(self, split: str, row: int, values: dict[str, Any]) -> None:
        """Store one example: ``values`` maps every name of :data:`FIELDS` to that example's value."""
        group = self.h5[split]
        for name in FIELDS:
            group[name][row] = values[name]

    def finish(self, rows: dict[str, int], source: Path, command: str) -> None:
        """Drop unwritten tail rows (examples that were skipped) and write the file's attributes."""
        for split, n in rows.items():
            if n != self.counts.get(split, 0):
                group = self.h5[split]
                for name, spec in _layout(n, self.config).items():
                    data = group[name][:n]
                    del group[name]
                    _create(group, name, spec, data)
        attrs = self.h5.attrs
        attrs["format_version"] = FORMAT_VERSION
        attrs["joint_names"] = json.dumps(list(JOINT_NAMES))
        attrs["config"] = json.dumps(asdict(self.config))
        attrs["input_size"] = self.config.input_size
        attrs["heatmap_size"] = self.config.heatmap_size
        attrs["heatmap_stride"] = self.config.heatmap_stride
        attrs["heatmap_kernel"] = f"gaussian sigma={self.config.heatmap_sigma} heatmap px, peak 1"
        attrs["observer_centric"] = self.config.observer_centric
        attrs["transform"] = TRANSFORM_NOTE
        attrs["source"] = str(Path(source).name)
        attrs["command"] = command

    def close(self) -> None:
        """Close the file."""
        self.h5.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_preprocess_config(h5: h5py.File) -> PreprocessConfig:
    """The PreprocessConfig recorded in an open dataset file.

    Raises:
        CnnmrfError: not a cnnmrf dataset, or one of another format version.
    """
    try:
        if int(h5.attrs["format_version"]) != FORMAT_VERSION:
            raise CnnmrfError(
                f"{h5.filename} has format version {h5.attrs['format_version']}, expected "
                f"{FORMAT_VERSION}; re-run cnnmrf preprocess"
            )
        return PreprocessConfig(**json.loads(h5.attrs["config"]))
    except KeyError as err:
        raise CnnmrfError(
            f"{h5.filename} is not a cnnmrf dataset (no {err} attribute); make it with cnnmrf preprocess"
        ) from err


class DatasetFile:
    """A cnnmrf dataset file opened read-only: its :class:`PreprocessConfig` and reads of rows of its splits."""

    def __init__(self, path: Path) -> None:
        """Open ``path``.

        Raises:
            CnnmrfError: the file is missing, not HDF5, or not a cnnmrf dataset of this format version.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise CnnmrfError(
                f"{self.path} does not exist; make it with `cnnmrf preprocess FLIC_DIR --out {self.path}`"
            )
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise CnnmrfError(f"{self.path} is not a readable HDF5 file ({err})") from err
        try:
            self.config = read_preprocess_config(self._h5)
        except CnnmrfError:
            self._h5.close()
            raise

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the file holds ("train", "test")."""
        return tuple(self._h5)

    def _group(self, split: str) -> h5py.Group:
        if split not in self._h5:
            raise CnnmrfError(f"{self.path} has no '{split}' split")
        return self._h5[split]

    def num_rows(self, split: str) -> int:
        """Number of examples in ``split``.

        Raises:
            CnnmrfError: the file has no such split.
        """
        return int(self._group(split)["images"].shape[0])

    def read(
        self, split: str, fields: Iterable[str] = FIELDS, rows: Sequence[int] | np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Rows of some datasets of a split, in the order of ``rows``.

        Args:
            split: "train" or "test".
            fields: names of datasets of the split (see :data:`FIELDS`).
            rows: row numbers, any order, repeats allowed; None reads every row.

        Returns:
            ``{field: (len(rows), ...) array}``; ``file`` comes back as an object array of str.

        Raises:
            CnnmrfError: the file has no such split.
        """
        group = self._group(split)
        if rows is None:
            return {name: _values(group[name], slice(None)) for name in fields}
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing indices only
        if len(unique) == 0:
            return {name: np.empty((0, *group[name].shape[1:]), _dtype(group[name])) for name in fields}
        contiguous = unique[-1] - unique[0] + 1 == len(unique)
        where = slice(int(unique[0]), int(unique[-1]) + 1) if contiguous else unique
        return {name: _values(group[name], where)[inverse] for name in fields}

    def read_row(self, split: str, row: int, fields: Iterable[str] = FIELDS) -> dict[str, Any]:
        """One example of a split: ``{field: value}`` (``file`` as str)."""
        group = self._group(split)
        return {name: _values(group[name], int(row)) for name in fields}

    def close(self) -> None:
        """Close the file."""
        self._h5.close()

    def __enter__(self) -> DatasetFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _dtype(dataset: h5py.Dataset) -> np.dtype:
    return np.dtype(object) if h5py.check_string_dtype(dataset.dtype) else dataset.dtype


def _values(dataset: h5py.Dataset, where: int | slice | np.ndarray) -> Any:
    """``dataset[where]``, strings decoded to str."""
    if h5py.check_string_dtype(dataset.dtype):
        return dataset.asstr()[where]
    return dataset[where]


def open_dataset(path: Path) -> DatasetFile:
    """Open a cnnmrf HDF5 dataset read-only (use it as a context manager), with a clear error if it is not one."""
    return DatasetFile(path)


def read_split(
    path: Path, split: str, fields: Iterable[str] = FIELDS, rows: Sequence[int] | np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Open a dataset, read rows of a split and close it.

    Args:
        path: HDF5 dataset made by ``cnnmrf preprocess``.
        split: "train" or "test".
        fields: names of datasets of the split (see :data:`FIELDS`).
        rows: row numbers, any order, repeats allowed; None reads every row.

    Returns:
        ``{field: (len(rows), ...) array}`` (see :meth:`DatasetFile.read`).

    Raises:
        CnnmrfError: a missing or foreign file, or no such split.
    """
    with open_dataset(path) as dataset:
        return dataset.read(split, fields, rows)
