"""Build the HDF5 training/test dataset from raw FLIC: person-centred crops, joints and target heatmaps."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cnnmrf.data.flic import FlicExample, FlicSource, observer_centric
from cnnmrf.data.geometry import apply_affine, crop_transform, input_to_heatmap
from cnnmrf.data.heatmaps import encode_heatmaps
from cnnmrf.data.images import decode_image, render
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_path
from cnnmrf.joints import JOINT_NAMES

FORMAT_VERSION = 1
SPLITS = ("train", "test")
TRANSFORM_NOTE = (
    "transform[n] is a 2x3 affine matrix A mapping original-image pixels p=(x, y) to model-input pixels "
    "A[:, :2] @ p + A[:, 2] (pixel centres at integer coordinates). The crop is a square centred on the FLIC "
    "torsobox centre with side crop_scale * torsobox height, scaled to input_size. Heatmap pixels are "
    "(input + 0.5) / heatmap_stride - 0.5."
)


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


@dataclass
class PreprocessReport:
    """What a preprocess run did."""

    counts: dict[str, int] = field(default_factory=dict)  # examples written per split
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of images that failed
    seconds: float = 0.0


def select_examples(examples: list[FlicExample], limit: int | None) -> list[FlicExample]:
    """Examples of the train and test splits; with ``limit``, the first ``limit`` split proportionally."""
    chosen = [e for e in examples if e.split in SPLITS]
    if limit is None or limit >= len(chosen):
        return chosen
    n_train = sum(e.split == "train" for e in chosen)
    quota = {"train": round(limit * n_train / len(chosen))}
    quota["test"] = limit - quota["train"]
    taken = {s: 0 for s in SPLITS}
    out = []
    for e in chosen:
        if taken[e.split] < quota[e.split]:
            taken[e.split] += 1
            out.append(e)
    return out


def _labels(example: FlicExample, config: PreprocessConfig) -> np.ndarray:
    return observer_centric(example.joints) if config.observer_centric else example.joints


def _process(task: tuple[FlicSource, FlicExample, PreprocessConfig]) -> tuple[np.ndarray | None, str]:
    """Worker: decode and crop one example's image. Returns (image or None, error message)."""
    source, example, config = task
    transform = crop_transform(example.torsobox, config.input_size, config.crop_scale)
    try:
        data = source.read_image_bytes(example.file)
    except (FileNotFoundError, KeyError):
        return None, "missing image"
    except (OSError, zipfile.BadZipFile, zlib.error) as err:
        return None, f"unreadable image ({err})"
    try:
        image, factor = decode_image(data, target_scale=transform[0, 0])
    except ValueError as err:
        return None, str(err)
    return render(image, transform, config.input_size, factor), ""


def _create_split(h5: h5py.File, split: str, n: int, config: PreprocessConfig) -> h5py.Group:
    s, k = config.input_size, len(JOINT_NAMES)
    hh, hw = config.heatmap_size
    group = h5.create_group(split)
    opts = {"track_times": False}
    group.create_dataset("images", (n, s, s, 3), np.uint8, chunks=(1, s, s, 3), **opts)
    group.create_dataset("heatmaps", (n, k, hh, hw), np.float16, chunks=(1, k, hh, hw), **opts)
    group.create_dataset("joints", (n, k, 2), np.float32, **opts)
    group.create_dataset("joints_input", (n, k, 2), np.float32, **opts)
    group.create_dataset("visible", (n, k), bool, **opts)
    group.create_dataset("transform", (n, 2, 3), np.float64, **opts)
    group.create_dataset("torsobox", (n, 4), np.float32, **opts)
    group.create_dataset("index", (n,), np.int32, **opts)
    group.create_dataset("file", (n,), h5py.string_dtype(), **opts)
    return group


def _write_example(
    group: h5py.Group, row: int, example: FlicExample, image: np.ndarray, config: PreprocessConfig
) -> None:
    transform = crop_transform(example.torsobox, config.input_size, config.crop_scale)
    joints = _labels(example, config)  # (K, 2) original pixels
    joints_input = apply_affine(transform, joints)  # (K, 2) model-input pixels
    inside = np.all((joints_input >= 0) & (joints_input <= config.input_size - 1), axis=-1)
    visible = inside & np.all(np.isfinite(joints), axis=-1)
    hm = encode_heatmaps(
        input_to_heatmap(joints_input, config.heatmap_stride), visible, config.heatmap_size, config.heatmap_sigma
    )  # (K, H, W)
    group["images"][row] = image
    group["heatmaps"][row] = hm.astype(np.float16)
    group["joints"][row] = joints
    group["joints_input"][row] = joints_input
    group["visible"][row] = visible
    group["transform"][row] = transform
    group["torsobox"][row] = example.torsobox
    group["index"][row] = example.index
    group["file"][row] = example.file


def preprocess_flic(
    source_path: Path,
    out: Path,
    config: PreprocessConfig,
    *,
    workers: int = 0,
    limit: int | None = None,
    skip_bad: bool = False,
    force: bool = False,
    command: str = "",
    on_progress: Callable[[int, int], None] | None = None,
) -> PreprocessReport:
    """Convert a FLIC folder or FLIC.zip into the HDF5 dataset described in docs/data-format.md.

    Images are decoded in ``workers`` processes (0: all cores) and streamed to a temporary file next to ``out``,
    which is renamed to ``out`` only when everything succeeded.

    Args:
        source_path: FLIC folder (``examples.mat`` + ``images/``) or ``FLIC.zip``.
        out: the HDF5 file to create.
        config: input geometry and heatmap settings.
        workers: decoding processes; 0 means one per core.
        limit: keep only the first ``limit`` examples (split proportionally between train and test).
        skip_bad: drop examples whose image is missing or corrupt instead of failing.
        force: overwrite an existing ``out``.
        command: the command line, recorded in the file.
        on_progress: called with (done, total) after each example.

    Raises:
        CnnmrfError: bad input, an existing output without ``force``, or bad images without ``skip_bad``.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise CnnmrfError(f"{out} is a folder; give a file name such as data/flic.h5")
    if out.exists() and not force:
        raise CnnmrfError(f"{out} already exists; pass --force to overwrite it")
    source = FlicSource(source_path)
    examples = select_examples(source.examples(), limit)
    if not examples:
        raise CnnmrfError(f"{source_path} has no examples in the train or test split")
    report = PreprocessReport()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", track_order=True) as h5:
            groups = {s: _create_split(h5, s, sum(e.split == s for e in examples), config) for s in SPLITS}
            rows = {s: 0 for s in SPLITS}
            workers = workers or os.cpu_count() or 1
            tasks = [(source, e, config) for e in examples]
            ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            with ctx.Pool(workers) if workers > 1 else _SerialPool() as pool:
                for done, (example, (image, error)) in enumerate(
                    zip(examples, pool.imap(_process, tasks, chunksize=8)), start=1
                ):
                    if image is None:
                        report.bad.append((example.file, error))
                    else:
                        _write_example(groups[example.split], rows[example.split], example, image, config)
                        rows[example.split] += 1
                    if on_progress is not None:
                        on_progress(done, len(examples))
            if report.bad and not skip_bad:
                first = ", ".join(f"{f} ({why})" for f, why in report.bad[:3])
                more = f" and {len(report.bad) - 3} more" if len(report.bad) > 3 else ""
                raise CnnmrfError(f"{len(report.bad)} bad image(s): {first}{more}; pass --skip-bad to drop them")
            report.counts = dict(rows)
            if any(rows[s] != groups[s]["images"].shape[0] for s in SPLITS):
                _shrink(h5, rows)
            _write_attributes(h5, config, source_path, command)
    report.seconds = time.perf_counter() - started
    return report


def _shrink(h5: h5py.File, rows: dict[str, int]) -> None:
    """Drop the unused tail rows left by skipped images (datasets are fixed-size, so copy them)."""
    for split, n in rows.items():
        group = h5[split]
        for name in list(group):
            data = group[name][:n]
            chunks = group[name].chunks
            del group[name]
            group.create_dataset(name, data=data, chunks=chunks if n else None, track_times=False)


def _write_attributes(h5: h5py.File, config: PreprocessConfig, source: Path, command: str) -> None:
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["joint_names"] = json.dumps(list(JOINT_NAMES))
    h5.attrs["config"] = json.dumps(asdict(config))
    h5.attrs["input_size"] = config.input_size
    h5.attrs["heatmap_size"] = config.heatmap_size
    h5.attrs["heatmap_stride"] = config.heatmap_stride
    h5.attrs["heatmap_kernel"] = f"gaussian sigma={config.heatmap_sigma} heatmap px, peak 1"
    h5.attrs["observer_centric"] = config.observer_centric
    h5.attrs["transform"] = TRANSFORM_NOTE
    h5.attrs["source"] = str(Path(source).name)
    h5.attrs["command"] = command


def read_preprocess_config(h5: h5py.File) -> PreprocessConfig:
    """The PreprocessConfig recorded in a dataset file."""
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


class _SerialPool:
    """Stand-in for a process pool when one worker is asked for."""

    def __enter__(self) -> _SerialPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        return map(fn, items)
