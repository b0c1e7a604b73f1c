"""The HDF5 dataset format (docs/data-format.md): its layout and every read and write of the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from cnnmrf.data.config import PreprocessConfig, preprocess_config_from
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


def split_layout(n: int, config: PreprocessConfig) -> dict[str, dict[str, Any]]:
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


def read_preprocess_config(h5: h5py.File) -> PreprocessConfig:
    """The PreprocessConfig recorded in an open dataset file.

    Raises:
        CnnmrfError: not a cnnmrf dataset, one of another format version, or one recording an invalid crop geometry.
    """
    where = f"dataset {h5.filename}"
    try:
        version, text = h5.attrs["format_version"], h5.attrs["config"]
    except KeyError as err:
        raise CnnmrfError(
            f"{h5.filename} is not a cnnmrf dataset (no {err} attribute); make it with cnnmrf preprocess"
        ) from err
    if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
        raise CnnmrfError(
            f"{h5.filename} has format version {version!r}, expected {FORMAT_VERSION}; re-run cnnmrf preprocess"
        )
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as err:
        raise CnnmrfError(f"{where} records an invalid crop geometry (preprocess settings): not JSON") from err
    return preprocess_config_from(data, where)


def check_layout(h5: h5py.File, config: PreprocessConfig) -> None:
    """Check that an open dataset file holds every split with every dataset of :func:`split_layout`, each of the shape
    ``config`` gives it and of its kind of values, with as many rows as the split's images.

    Raises:
        CnnmrfError: the first difference, naming the file.
    """

    def invalid(problem: str) -> CnnmrfError:
        return CnnmrfError(
            f"{h5.filename} is not a valid cnnmrf dataset: {problem}; make it again with cnnmrf preprocess"
        )

    for split in SPLITS:
        group = h5.get(split)
        if not isinstance(group, h5py.Group):
            raise invalid(f"no '{split}' split")
        images = group.get("images")
        n = images.shape[0] if isinstance(images, h5py.Dataset) and images.shape else 0
        for name, spec in split_layout(n, config).items():
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise invalid(f"no '{split}/{name}' dataset")
            if dataset.shape != spec["shape"]:
                raise invalid(f"'{split}/{name}' has shape {dataset.shape}, expected {spec['shape']}")
            want = np.dtype(spec["dtype"])
            got = dataset.dtype
            if want.kind == "O":
                same_kind = h5py.check_string_dtype(got) is not None
            else:
                same_kind = got.kind == want.kind or (want.kind == "f" and got.kind in "iu")
            if not same_kind:
                raise invalid(f"'{split}/{name}' holds {got}, expected {want if want.kind != 'O' else 'strings'}")


class DatasetFile:
    """A cnnmrf dataset file opened read-only: its :class:`PreprocessConfig` and reads of rows of its splits."""

    def __init__(self, path: Path) -> None:
        """Open ``path``.

        Raises:
            CnnmrfError: the file is missing, not HDF5, or not a cnnmrf dataset of this format version and layout
                (see :func:`check_layout`).
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
            check_layout(self._h5, self.config)
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
