"""Benchmark `cnnmrf preprocess` on the FLIC copy: wall time, images per second, peak memory and HDF5 size."""

# Usage (from the repository root): python bench/preprocess.py [--flic ../shared/flic/FLIC --workers 0 --limit N]

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.preprocess import preprocess_flic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FLIC = REPO.parent / "shared" / "flic" / "FLIC"


def max_rss_mb() -> tuple[float, float]:
    """Peak resident set size in MiB of this process and of its largest waited-for child (ru_maxrss is KiB on Linux)."""
    unit = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0  # macOS reports bytes
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / unit
    return own, children


def main() -> None:
    """Parse options, preprocess FLIC into a temporary folder and print a final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flic", type=Path, default=DEFAULT_FLIC, help="FLIC folder or FLIC.zip")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per core)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples (a quick check)")
    parser.add_argument("--input-size", type=int, default=PreprocessConfig.input_size)
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where to write the temporary HDF5 file")
    args = parser.parse_args()

    if not args.flic.exists():
        print(f"skipped: no FLIC copy at {args.flic} (pass --flic FOLDER_OR_ZIP)")
        print(json.dumps({"benchmark": "preprocess", "skipped": True, "reason": f"{args.flic} not found"}))
        return

    config = PreprocessConfig(input_size=args.input_size)
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="cnnmrf-bench-") as tmp:
        out = Path(tmp) / "flic.h5"
        start = time.perf_counter()
        report = preprocess_flic(args.flic, out, config, workers=workers, limit=args.limit, skip_bad=True)
        seconds = time.perf_counter() - start
        hdf5_mb = out.stat().st_size / 2**20
    own_mb, children_mb = max_rss_mb()
    images = sum(report.counts.values())
    result = {
        "benchmark": "preprocess",
        "flic": str(args.flic),
        "limit": args.limit,
        "workers": workers,
        "config": asdict(config),
        "examples": images,
        "counts": report.counts,
        "bad": len(report.bad),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 2),
        # max of this process's peak and the largest waited-for child's peak (not a sum over concurrent workers)
        "peak_rss_mb": round(max(own_mb, children_mb), 1),
        "peak_rss_self_mb": round(own_mb, 1),
        "peak_rss_children_mb": round(children_mb, 1),
        "hdf5_mb": round(hdf5_mb, 2),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"preprocessed {images} examples ({report.counts}, {len(report.bad)} bad) from {args.flic}")
    print(f"wall time   {seconds:.2f} s with {workers} worker(s): {images / seconds:.1f} images/s")
    print(
        f"peak RSS    {result['peak_rss_mb']} MiB (max of this process {own_mb:.0f} MiB and its largest child "
        f"{children_mb:.0f} MiB; ru_maxrss, not a sum)"
    )
    print(f"HDF5 size   {hdf5_mb:.1f} MiB ({hdf5_mb * 2**20 / max(images, 1) / 1024:.1f} KiB per example)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
