"""Benchmark the part detector: forward and training throughput, FLOPs, and the share of the machine's GEMM peak."""

# Usage (from the repository root): python bench/detector.py [--preset small --batch 16 --iters 5 --threads 2]

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cnnmrf.models.detector import DETECTOR_PRESETS, PartDetector


def conv_flops_per_image(model: nn.Module, image: torch.Tensor) -> float:
    """Multiply-add FLOPs (2 per MAC) of every Conv2d in one forward pass, per image, counted with forward hooks.

    A convolution costs ``2 * Cin * Cout * k_h * k_w * H_out * W_out / groups``; pooling, BatchNorm, ReLU and the
    pyramid's resampling are left out (they are a few percent at most).
    """
    total = [0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        h_out, w_out = output.shape[-2:]
        total[0] += 2.0 * module.in_channels * module.out_channels * kh * kw * h_out * w_out / module.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(image[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def median_seconds(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median wall time of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(size: int, warmup: int, iters: int) -> float:
    """GFLOP/s of a float32 ``size x size`` matrix product (median of ``iters``), the machine's practical peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = median_seconds(lambda: torch.mm(a, b), warmup, iters)
    return 2.0 * size**3 / seconds / 1e9


def main() -> None:
    """Parse options, run the measurements and print human lines then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small", choices=sorted(DETECTOR_PRESETS))
    parser.add_argument("--size", type=int, default=0, help="input side (0: the preset's input size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--gemm-iters", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a short check: 1 warm-up, 2 timed iterations")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.iters, args.gemm_iters = 1, 2, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = DETECTOR_PRESETS[args.preset]()
    size = args.size or config.input_size
    model = PartDetector(config)
    images = torch.rand(args.batch, 3, size, size)
    flops = conv_flops_per_image(model, images)
    weights = torch.randn(args.batch, config.num_joints, size // 4, size // 4)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        (model(images) * weights).sum().backward()

    model.eval()
    forward_s = median_seconds(forward, args.warmup, args.iters)
    model.train()
    train_s = median_seconds(train_step, args.warmup, args.iters)
    gemm = gemm_gflops(args.gemm_size, 1, args.gemm_iters)

    ips_forward = args.batch / forward_s
    ips_train = args.batch / train_s
    gflops_forward = ips_forward * flops / 1e9
    gflops_train = ips_train * 3 * flops / 1e9  # backward ~ 2x forward (input and weight gradients)
    threads = torch.get_num_threads()
    print(f"detector preset {args.preset}: {size}x{size} input, batch {args.batch}, {threads} threads, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    print(f"  conv FLOPs: {flops / 1e9:.3f} GFLOP/image forward, ~{3 * flops / 1e9:.3f} forward+backward")
    print(f"  forward (eval, no grad): {ips_forward:.1f} images/s = {gflops_forward:.1f} GFLOP/s")
    print(f"  forward+backward (train): {ips_train:.1f} images/s = {gflops_train:.1f} GFLOP/s")
    print(f"  float32 {args.gemm_size}^2 GEMM: {gemm:.1f} GFLOP/s -> training reaches {gflops_train / gemm:.1%} of it")
    print(json.dumps({
        "preset": args.preset,
        "input_size": size,
        "batch": args.batch,
        "images_per_s_forward": round(ips_forward, 2),
        "images_per_s_train": round(ips_train, 2),
        "gflop_per_image_forward": round(flops / 1e9, 4),
        "gflops_forward": round(gflops_forward, 2),
        "gflops_train": round(gflops_train, 2),
        "gemm_gflops": round(gemm, 2),
        "fraction_of_gemm_peak": round(gflops_train / gemm, 4),
        "threads": threads,
    }))


if __name__ == "__main__":
    main()
