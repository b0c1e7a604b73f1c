"""Writing a dataset file (the layout of :mod:`cnnmrf.data.format`), with write errors raised where they happen."""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cnnmrf.data.format import FIELDS, FORMAT_VERSION, SPLITS, TRANSFORM_NOTE, PreprocessConfig, split_layout
from cnnmrf.interrupts import deferred_interrupts
from cnnmrf.joints import JOINT_NAMES


def _create(group: h5py.Group, name: str, spec: dict[str, Any], data: np.ndarray | None = None) -> None:
    """Create one dataset (no timestamps, so equal inputs give equal files); chunked storage needs a row."""
    spec = dict(spec)
    if spec["shape"][0] == 0:  # HDF5 refuses chunks on an empty dataset: store it contiguous, uncompressed
        spec = {"shape": spec["shape"], "dtype": spec["dtype"]}
    group.create_dataset(name, data=data, track_times=False, **spec)


class _GuardedFile(io.RawIOBase):
    """The file object HDF5 writes a dataset through: the first failed write (a full disk) is kept and later writes
    are dropped, so HDF5 never meets an error it could only print (or crash on when closing); the writer raises the
    kept error instead, and the unfinished file is deleted."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file = open(path, "w+b", buffering=0)  # noqa: SIM115 (closed by close())
        self.failure: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.file.readinto(buffer)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while self.failure is None and done < len(view):
                done += self.file.write(view[done:]) or 0
        except OSError as err:
            self.failure = err
        return len(view)

    def flush(self) -> None:
        """Nothing to flush (unbuffered), also once closed (HDF5 may ask when it releases the file late)."""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        try:
            if self.failure is None:
                return self.file.truncate(size)
        except OSError as err:
            self.failure = err
        return self.file.tell() if size is None else size

    def sync(self) -> None:
        """Flush to the disk (where a delayed full disk shows)."""
        try:
            if self.failure is None:
                os.fsync(self.file.fileno())
        except OSError as err:
            self.failure = err

    def close(self) -> None:
        self.file.close()
        super().close()


class DatasetWriter:
    """Writes a dataset file: the splits' datasets at their final size, one example at a time, then attributes.

    Write errors (a full disk) are raised as OSError by the next :meth:`write` or :meth:`finish` (HDF5 itself only
    ever sees successful writes, see :class:`_GuardedFile`); the file is then unfinished, to be deleted.
    """

    def __init__(self, path: Path, counts: dict[str, int], config: PreprocessConfig) -> None:
        """Create ``path`` (overwriting it) with every dataset of every split at its final size.

        Args:
            path: the file to create.
            counts: examples per split (a split not named gets none).
            config: the crop and heatmap geometry, which sets the datasets' shapes.
        """
        self.config = config
        self.counts = dict(counts)
        self._file = _GuardedFile(path)
        self.h5: h5py.File | None = None
        try:
            with deferred_interrupts():  # Ctrl-C inside HDF5's calls into Python would leave it broken
                self.h5 = h5py.File(self._file, "w", track_order=True)
                for split in SPLITS:
                    group = self.h5.create_group(split)
                    for name, spec in split_layout(self.counts.get(split, 0), config).items():
                        _create(group, name, spec)
            self._check()
        except BaseException:
            self._close_quietly()
            raise

    def _check(self) -> None:
        """Raise the first write error met so far."""
        if self._file.failure is not None:
            raise self._file.failure

    def write(self, split: str, row: int, values: dict[str, Any]) -> None:
        """Store one example: ``values`` maps every name of :data:`FIELDS` to that example's value."""
        with deferred_interrupts():
            group = self.h5[split]
            for name in FIELDS:
                group[name][row] = values[name]
        self._check()

    def finish(self, rows: dict[str, int], source: Path, command: str) -> None:
        """Drop unwritten tail rows (examples that were skipped) and write the file's attributes."""
        self._check()
        with deferred_interrupts():
            self._finish(rows, source, command)
        self._check()

    def _finish(self, rows: dict[str, int], source: Path, command: str) -> None:
        for split, n in rows.items():
            if n != self.counts.get(split, 0):
                group = self.h5[split]
                for name, spec in split_layout(n, self.config).items():
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
        self.h5.flush()
        self._file.sync()

    def close(self) -> None:
        """Close the file (raising a write error that closing met)."""
        with deferred_interrupts():
            try:
                if self.h5 is not None:
                    self.h5.close()
                self._file.sync()
            finally:
                self._file.close()
        self._check()

    def _close_quietly(self) -> None:
        """Close the file after a failure: it is to be deleted, so a further error closing it does not matter."""
        try:
            self.close()
        except OSError:
            pass

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self._close_quietly()
