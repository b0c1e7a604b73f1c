"""Benchmark the spatial model forward+backward: batched-FFT implementation vs a direct F.conv2d reference."""

# Usage (from the repository root): python bench/mrf.py [--batch 8 --height 60 --width 90 --repeats 5 --device cpu]

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from cnnmrf.models.spatial import SpatialConfig, SpatialModel, spatial_forward_direct


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(
    fn: Callable[[torch.Tensor], torch.Tensor],
    model: SpatialModel,
    x: torch.Tensor,
    weights: torch.Tensor,
    repeats: int,
) -> tuple[float, torch.Tensor]:
    """Median wall time of ``fn(x)`` forward plus backward over ``repeats`` runs.

    Args:
        fn: Maps heatmaps to log-beliefs.
        model: Model whose gradients are cleared between runs.
        x: (B, K, H, W) input heatmaps (requires grad).
        weights: (B, K, H, W) fixed weights of the scalar loss ``sum(weights * fn(x))``.
        repeats: Number of timed runs.

    Returns:
        (median seconds, output of the last run detached).
    """
    times = []
    out = torch.empty(0)
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        x.grad = None
        _sync(x.device)
        start = time.perf_counter()
        out = fn(x)
        (out * weights).sum().backward()
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out.detach()


def main() -> None:
    """Parse options, time both implementations and print a final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--width", type=int, default=90)
    parser.add_argument("--joints", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the FFT version")
    parser.add_argument("--direct-repeats", type=int, default=1, help="timed repeats of the (slow) direct version")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = SpatialConfig(num_joints=args.joints, heatmap_size=(args.height, args.width))
    model = SpatialModel(config).to(device)
    with torch.no_grad():
        model.pair_kernels.add_(torch.randn_like(model.pair_kernels))
    x = torch.randn(args.batch, args.joints, args.height, args.width, device=device, requires_grad=True)
    weights = torch.randn_like(x)

    print(
        f"spatial model fwd+bwd: batch={args.batch} joints={args.joints} heatmap={args.height}x{args.width} "
        f"kernels={2 * args.height - 1}x{2 * args.width - 1} fft={model.fft_size} device={device} "
        f"threads={torch.get_num_threads()}"
    )
    time_fwd_bwd(model, model, x, weights, 1)  # warm-up (FFT plans, allocator)
    fft_s, fft_out = time_fwd_bwd(model, model, x, weights, args.repeats)
    print(f"fft:    {fft_s * 1e3:10.2f} ms (median of {args.repeats})")
    direct_s, direct_out = time_fwd_bwd(
        lambda h: spatial_forward_direct(model, h), model, x, weights, args.direct_repeats
    )
    print(f"direct: {direct_s * 1e3:10.2f} ms (median of {args.direct_repeats})")
    max_rel_diff = float((fft_out - direct_out).abs().max() / direct_out.abs().max())
    speedup = direct_s / fft_s
    print(f"speedup: {speedup:.1f}x   max relative output difference: {max_rel_diff:.2e}")
    print(
        json.dumps(
            {
                "fft_seconds": fft_s,
                "direct_seconds": direct_s,
                "speedup": speedup,
                "batch": args.batch,
                "joints": args.joints,
                "height": args.height,
                "width": args.width,
                "fft_repeats": args.repeats,
                "direct_repeats": args.direct_repeats,
                "device": str(device),
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "max_rel_diff": max_rel_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
