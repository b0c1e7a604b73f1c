"""Multi-resolution, fully convolutional part detector (Tompson et al. 2014, section 3.1, Fig. 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DetectorConfig:
    """Sizes of the part detector. The banks pool twice (stride 4); ``output_stride`` 2 adds an upsampling head."""

    num_joints: int = 10  # K, one heatmap per joint
    input_size: int = 128  # side of the square input the detector is trained on
    bank_channels: tuple[int, int, int] = (24, 32, 48)  # widths of each bank's 5x5, 5x5 and 9x9 convolutions
    head_channels: tuple[int, int] = (64, 64)  # widths of the head's 9x9 and 1x1 convolutions
    head_kernel: int = 9  # kernel of the head's first (large) convolution
    batch_norm: bool = True  # BatchNorm after each convolution (trains several times faster)
    num_scales: int = 3  # resolutions seen: full, 1/2, 1/4
    # 4: the paper's heatmaps at 1/4 of the input. 2: the stride-4 logits upsampled x2 plus a learned correction
    # from the head's features and the full-resolution bank's 1/2-scale features (a skip connection).
    output_stride: int = 4
    refine_channels: int = 32  # width of the stride-2 correction's 3x3 convolution (output_stride 2 only)

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel."""
        return self.output_stride


def _conv(cin: int, cout: int, kernel: int, batch_norm: bool) -> nn.Sequential:
    """Convolution ('same' padding) + optional BatchNorm + ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResolutionBank(nn.Module):
    """One resolution's feature bank: 5x5 conv, pool, 5x5 conv, pool, 9x9 conv. Shapes: (B, 3, S, S) ->
    (B, C, S/4, S/4)."""

    def __init__(self, channels: tuple[int, int, int], batch_norm: bool) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.layers = nn.Sequential(
            _conv(3, c1, 5, batch_norm),
            nn.MaxPool2d(2),
            _conv(c1, c2, 5, batch_norm),
            nn.MaxPool2d(2),
            _conv(c2, c3, 9, batch_norm),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the bank's features (B, C3, S/4, S/4) and its first block's output (B, C1, S/2, S/2)."""
        half = self.layers[:2](x)  # (B, C1, S/2, S/2)
        return self.layers[2:](half), half


class PartDetector(nn.Module):
    """Fully convolutional part detector over an image pyramid.

    Shapes: image (B, 3, S, S) in [0, 1] -> heatmap logits (B, K, S/4, S/4). Works on any input size divisible by
    ``4 * 2**(num_scales - 1)``; being fully convolutional it can also scan a whole frame.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.banks = nn.ModuleList(
            ResolutionBank(config.bank_channels, config.batch_norm) for _ in range(config.num_scales)
        )
        h1, h2 = config.head_channels
        self.head = nn.Sequential(
            _conv(config.bank_channels[2], h1, config.head_kernel, config.batch_norm),
            _conv(h1, h2, 1, config.batch_norm),
            nn.Conv2d(h2, config.num_joints, 1),
        )
        if config.output_stride not in (2, 4):
            raise ValueError(f"output_stride must be 2 or 4, not {config.output_stride}")
        self.refine = None
        if config.output_stride == 2:
            self.refine = nn.Sequential(
                _conv(h2 + config.bank_channels[0], config.refine_channels, 3, config.batch_norm),
                nn.Conv2d(config.refine_channels, config.num_joints, 1),
            )
            nn.init.zeros_(self.refine[-1].weight)  # starts as the upsampled stride-4 logits exactly
            nn.init.zeros_(self.refine[-1].bias)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std  # (B, 3, S, S)
        size = (x.shape[-2] // 4, x.shape[-1] // 4)
        features, skip = None, None
        for level, bank in enumerate(self.banks):
            scaled = x if level == 0 else F.avg_pool2d(x, 2**level)  # (B, 3, S/2^l, S/2^l)
            out, half = bank(scaled)  # (B, C, S/2^(l+2), S/2^(l+2))
            if level:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)  # (B, C, S/4, S/4)
            else:
                skip = half  # (B, C1, S/2, S/2)
            features = out if features is None else features + out
        body = self.head[:-1](features)  # (B, H2, S/4, S/4)
        logits = self.head[-1](body)  # (B, K, S/4, S/4)
        if self.refine is None:
            return logits
        up = F.interpolate(body, size=skip.shape[-2:], mode="bilinear", align_corners=False)  # (B, H2, S/2, S/2)
        coarse = F.interpolate(logits, size=skip.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, S/2, S/2)
        return coarse + self.refine(torch.cat([up, skip], dim=1))  # (B, K, S/2, S/2)


def _small() -> DetectorConfig:
    return DetectorConfig()


def _paper() -> DetectorConfig:
    # Widths of the paper's Fig. 2 (128-channel banks, 512/256 head) at twice the input resolution.
    return DetectorConfig(input_size=256, bank_channels=(128, 128, 128), head_channels=(512, 256))


def _small_hr() -> DetectorConfig:
    # `small` with stride-2 heatmaps (64x64 at 128 px): finer localisation for ~20% more compute.
    return DetectorConfig(output_stride=2)


def _tiny() -> DetectorConfig:
    # For tests and smoke runs only.
    return DetectorConfig(input_size=64, bank_channels=(8, 8, 16), head_channels=(16, 16), head_kernel=5)


DETECTOR_PRESETS: dict[str, Callable[[], DetectorConfig]] = {
    "small": _small,
    "small-hr": _small_hr,
    "paper": _paper,
    "tiny": _tiny,
}
