"""Benchmark the part detector in float32 and bfloat16: training and inference throughput against the GEMM peaks."""

# Usage (from the repository root): python bench/detector.py [--preset small-hr --batch 16 --iters 5 --threads 2]

from __future__ import annotations

import argparse
import json

import torch
from timing import gemm_gflops, median_seconds  # bench/timing.py, beside this script
from torch import nn

from cnnmrf.devices import autocast, resolve_precision
from cnnmrf.models.detector import DETECTOR_PRESETS, PartDetector

DEFAULT_PRESET = "small-hr"  # the bundled model's preset


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


def throughput(
    model: PartDetector, images: torch.Tensor, dtype: torch.dtype, warmup: int, iters: int
) -> tuple[float, float]:
    """(inference, training) images/s of ``model`` on ``images`` with the detector's arithmetic in ``dtype``."""
    device = images.device
    if dtype == torch.bfloat16:  # what the training loop does for bf16: channels_last model and inputs
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    weights = None

    def forward() -> None:
        with torch.no_grad(), autocast(device, dtype):
            model(images)

    def train_step() -> None:
        nonlocal weights
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = model(images)
        weights = torch.randn(out.shape) if weights is None else weights
        (out.float() * weights).sum().backward()

    model.eval()
    infer_s = median_seconds(forward, warmup, iters)
    model.train()
    train_s = median_seconds(train_step, warmup, iters)
    model.to(memory_format=torch.contiguous_format)
    return images.shape[0] / infer_s, images.shape[0] / train_s


def main() -> None:
    """Parse options, run the measurements and print human lines then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(DETECTOR_PRESETS))
    parser.add_argument("--size", type=int, default=0, help="input side (0: the preset's input size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--gemm-size", type=int, default=1024)
    parser.add_argument("--gemm-iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precisions", default="fp32,bf16", help="which of fp32,bf16 to measure")
    parser.add_argument("--quick", action="store_true", help="a short check: batch 4, 1 timed iteration")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.warmup, args.iters, args.gemm_iters = 4, 1, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = DETECTOR_PRESETS[args.preset]()
    size = args.size or config.input_size
    model = PartDetector(config)
    images = torch.rand(args.batch, 3, size, size)
    flops = conv_flops_per_image(model, images)
    auto = resolve_precision("auto", torch.device("cpu"))
    result: dict[str, object] = {
        "preset": args.preset,
        "input_size": size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "auto_precision": auto.name,
        "auto_reason": auto.reason,
        "gflop_per_image_forward": round(flops / 1e9, 4),
    }
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name not in args.precisions.split(","):
            continue
        gemm = gemm_gflops(args.gemm_size, dtype, 1, args.gemm_iters)
        infer, train = throughput(model, images, dtype, args.warmup, args.iters)
        result |= {
            f"gemm_gflops_{name}": round(gemm, 2),
            f"infer_images_per_s_{name}": round(infer, 2),
            f"train_images_per_s_{name}": round(train, 2),
            f"train_gflops_{name}": round(train * 3 * flops / 1e9, 2),
        }  # backward ~ 2x forward
    measured = [name for name in ("fp32", "bf16") if f"gemm_gflops_{name}" in result]
    print(
        f"detector preset {args.preset}: {size}x{size} input, batch {args.batch}, {result['threads']} threads, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {flops / 1e9:.3f} GFLOP/image forward"
    )
    print(f"auto precision on this CPU: {auto.name} ({auto.reason})")
    for name in measured:
        infer, train = result[f"infer_images_per_s_{name}"], result[f"train_images_per_s_{name}"]
        print(
            f"  {name}: GEMM {result[f'gemm_gflops_{name}']:8.1f} GFLOP/s | inference {infer:6.1f} img/s | "
            f"training {train:6.1f} img/s = {result[f'train_gflops_{name}']:.1f} GFLOP/s"
        )
    if len(measured) == 2:
        result["bf16_over_fp32_train"] = round(result["train_images_per_s_bf16"] / result["train_images_per_s_fp32"], 3)
        result["fraction_of_bf16_gemm_peak"] = round(result["train_gflops_bf16"] / result["gemm_gflops_bf16"], 4)
        print(
            f"  bf16 / fp32 training: {result['bf16_over_fp32_train']:.2f}x; bf16 training reaches "
            f"{result['fraction_of_bf16_gemm_peak']:.1%} of the bf16 GEMM rate"
        )
    best = max(measured, key=lambda name: result[f"gemm_gflops_{name}"])  # type: ignore[arg-type]
    result["fraction_of_best_gemm_peak"] = round(result[f"train_gflops_{best}"] / result[f"gemm_gflops_{best}"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
