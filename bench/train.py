"""Benchmark training throughput through the loop's own pieces: images/s, time waiting for data, and peak memory."""

# Usage (from the repository root): python bench/train.py [--data data/flic.h5 --steps 20 --batch 16 --workers 2]
# It needs a dataset made by `cnnmrf preprocess` and says so when --data does not exist. It times whole training steps
# (summed, with the time spent waiting for data split out), so it has no use for bench/timing.py's median_seconds.

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from cnnmrf.data.dataset import AugmentConfig, FlicDataset
from cnnmrf.data.format import open_dataset
from cnnmrf.losses import LOSSES
from cnnmrf.models.detector import DETECTOR_PRESETS
from cnnmrf.models.pose import PoseConfig, PoseModel
from cnnmrf.training.config import TrainConfig
from cnnmrf.training.optim import build_optimizer, stage_loss

FLIC_TRAIN_EXAMPLES = 3987  # FLIC's training split, the size of one epoch


def peak_rss_mb(who: int) -> float:
    """Peak resident memory in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def main() -> None:
    """Parse options, time the training steps and print human lines then one JSON line."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/flic.h5"))
    parser.add_argument("--preset", default=defaults.preset, choices=sorted(DETECTOR_PRESETS))
    parser.add_argument("--batch", type=int, default=defaults.batch_size)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (worker start-up, allocator)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a short check: 1 warm-up and 4 timed steps")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = args.data
    if not data.is_file():
        sys.exit(f"{data} not found: make it with `cnnmrf preprocess path/to/FLIC --out {data}`")
    with open_dataset(data) as dataset:
        prep = dataset.config

    config = TrainConfig(preset=args.preset, batch_size=args.batch, workers=args.workers, device="cpu")
    detector = DETECTOR_PRESETS[args.preset]()
    detector.input_size = prep.input_size
    model = PoseModel(PoseConfig(detector=detector)).train()
    optimizer = build_optimizer(config, model)
    loss_fn = LOSSES[config.loss.value]
    trainable = [p for p in model.parameters() if p.requires_grad]

    dataset = FlicDataset(data, "train", augment=AugmentConfig(), seed=0)
    needed = (args.warmup + args.steps) * args.batch
    sampler = RandomSampler(
        dataset, replacement=len(dataset) < needed, num_samples=needed, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers, drop_last=True)
    iterator = iter(loader)
    wait = total = 0.0
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        batch = next(iterator)
        fetched = time.perf_counter()
        out = model(batch["image"])
        loss = stage_loss(config, loss_fn, out, batch["heatmaps"], batch["visible"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        if step >= args.warmup:
            wait += fetched - started
            total += time.perf_counter() - started
    del iterator  # shuts the workers down, so their peak memory is counted in RUSAGE_CHILDREN
    main_rss, worker_rss = peak_rss_mb(resource.RUSAGE_SELF), peak_rss_mb(resource.RUSAGE_CHILDREN)

    images_per_s = args.steps * args.batch / total
    wait_fraction = wait / total
    print(
        f"training {args.preset} on {data} ({prep.input_size} px crops), batch {args.batch}, {args.workers} workers, "
        f"{torch.get_num_threads()} threads, {args.steps} timed steps (final loss {loss.item():.3f})"
    )
    print(f"  {images_per_s:.1f} images/s, {wait_fraction:.1%} of step time waiting for data")
    print(f"  one FLIC epoch ({FLIC_TRAIN_EXAMPLES} examples) ~ {FLIC_TRAIN_EXAMPLES / images_per_s:.0f} s")
    print(f"  peak RSS: main process {main_rss:.0f} MiB, largest worker {worker_rss:.0f} MiB")
    print(
        json.dumps(
            {
                "images_per_s": round(images_per_s, 2),
                "data_wait_fraction": round(wait_fraction, 4),
                "peak_rss_mb": round(main_rss, 1),
                "peak_rss_worker_mb": round(worker_rss, 1),
                "steps": args.steps,
                "batch_size": args.batch,
                "workers": args.workers,
                "preset": args.preset,
                "input_size": prep.input_size,
                "threads": torch.get_num_threads(),
                "epoch_seconds_estimate": round(FLIC_TRAIN_EXAMPLES / images_per_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
