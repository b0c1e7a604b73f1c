"""Build the HDF5 training/test dataset from raw FLIC: person-centred crops, joints and target heatmaps."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnmrf.data.flic import FlicExample, FlicSource, observer_centric
from cnnmrf.data.format import SPLITS, PreprocessConfig
from cnnmrf.data.geometry import apply_affine, box_problem, crop_transform, input_to_heatmap
from cnnmrf.data.heatmaps import encode_heatmaps
from cnnmrf.data.images import decode_image, render
from cnnmrf.data.writer import DatasetWriter
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_path, output_file
from cnnmrf.interrupts import check_interrupted, ignore_interrupts


@dataclass
class PreprocessReport:
    """What a preprocess run did."""

    counts: dict[str, int] = field(default_factory=dict)  # examples written per split
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of examples that failed
    non_finite: int = 0  # joint labels that are NaN or infinite in examples.mat: stored as invisible
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
    """Worker: decode and crop one example's image. Returns (image or None, why it failed)."""
    source, example, config = task
    transform = crop_transform(example.torsobox, config.input_size, config.crop_scale)
    try:
        data = source.read_image_bytes(example.file)
    except (FileNotFoundError, KeyError):
        return None, "missing image"
    except OSError as err:
        return None, f"unreadable image ({err})"
    try:
        image, factor = decode_image(data, target_scale=transform[0, 0])
    except ValueError as err:
        return None, str(err)
    problem = box_problem(example.torsobox, (round(image.size[0] * factor), round(image.size[1] * factor)))
    if problem:
        return None, problem
    return render(image, transform, config.input_size, factor), ""


def _example_values(example: FlicExample, image: np.ndarray, config: PreprocessConfig) -> dict[str, Any]:
    """Everything the dataset stores about one example (see :data:`cnnmrf.data.format.FIELDS`)."""
    transform = crop_transform(example.torsobox, config.input_size, config.crop_scale)  # (2, 3)
    joints = _labels(example, config)  # (K, 2) original pixels
    labelled = np.all(np.isfinite(joints), axis=-1)  # (K,) a NaN or infinite label is no label: invisible
    joints = np.where(labelled[:, None], joints, np.nan)
    joints_input = apply_affine(transform, joints)  # (K, 2) model-input pixels
    with np.errstate(invalid="ignore"):
        inside = np.all((joints_input >= 0) & (joints_input <= config.input_size - 1), axis=-1)
    visible = inside & labelled  # (K,)
    heatmaps = encode_heatmaps(
        input_to_heatmap(joints_input, config.heatmap_stride), visible, config.heatmap_size, config.heatmap_sigma
    )  # (K, H, W)
    return {
        "images": image,
        "heatmaps": heatmaps.astype(np.float16),
        "joints": joints,
        "joints_input": joints_input,
        "visible": visible,
        "transform": transform,
        "torsobox": example.torsobox,
        "index": example.index,
        "file": example.file,
    }


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
    # lock, then check, then write: two commands writing one file cannot both find it free
    with output_file(out, force, "preprocess"):
        source = FlicSource(source_path)
        examples = select_examples(source.examples(), limit)
        if not examples:
            raise CnnmrfError(f"{source_path} has no examples in the train or test split")
        report = PreprocessReport()
        boxes = {id(e): box_problem(e.torsobox) for e in examples}  # a box that is no box: a bad example, like an image
        report.bad = [(e.file, boxes[id(e)]) for e in examples if boxes[id(e)]]
        examples = [e for e in examples if not boxes[id(e)]]
        counts = {split: sum(e.split == split for e in examples) for split in SPLITS}
        workers = workers or os.cpu_count() or 1
        tasks = [(source, e, config) for e in examples]
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        # The pool starts before the HDF5 file is opened (no open file in forked workers); workers ignore Ctrl-C and
        # leaving the block terminates them, so Ctrl-C stops everything at once.
        with ctx.Pool(workers, initializer=ignore_interrupts) if workers > 1 else _SerialPool() as pool:
            with atomic_path(out) as tmp, DatasetWriter(tmp, counts, config) as writer:
                rows = {split: 0 for split in SPLITS}
                results = pool.imap(_process, tasks, chunksize=8)
                for done, (example, (image, error)) in enumerate(zip(examples, results), start=1):
                    check_interrupted()
                    if image is None:
                        report.bad.append((example.file, error))
                    else:
                        values = _example_values(example, image, config)
                        report.non_finite += int(np.sum(~np.isfinite(values["joints"]).all(axis=-1)))
                        writer.write(example.split, rows[example.split], values)
                        rows[example.split] += 1
                    if on_progress is not None:
                        on_progress(done, len(examples))
                if report.bad and not skip_bad:
                    first = ", ".join(f"{f} ({why})" for f, why in report.bad[:3])
                    more = f" and {len(report.bad) - 3} more" if len(report.bad) > 3 else ""
                    raise CnnmrfError(f"{len(report.bad)} bad example(s): {first}{more}; pass --skip-bad to drop them")
                report.counts = dict(rows)
                writer.finish(rows, source_path, command)
    report.seconds = time.perf_counter() - started
    return report


class _SerialPool:
    """Stand-in for a process pool when one worker is asked for."""

    def __enter__(self) -> _SerialPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        return map(fn, items)
