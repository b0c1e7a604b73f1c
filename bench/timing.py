"""Timing helpers shared by the benchmarks (imported from the scripts' own folder: run them as python bench/X.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(
    fn: Callable[[], object], warmup: int = 1, iters: int = 5, device: torch.device | None = None
) -> float:
    """Median wall time of ``fn()`` over ``iters`` timed calls after ``warmup`` untimed ones (CUDA synchronised)."""

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(size: int, dtype: torch.dtype, warmup: int = 1, iters: int = 5) -> float:
    """GFLOP/s of a ``size x size`` matrix product in ``dtype`` (median of ``iters``): the machine's practical peak."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2.0 * size**3 / median_seconds(lambda: torch.mm(a, b), warmup, iters) / 1e9
