"""The full pose model: part detector, optionally followed by the spatial model, plus config (de)serialisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from cnnmrf.models.detector import DetectorConfig, PartDetector
from cnnmrf.models.spatial import SpatialConfig, SpatialModel


@dataclass
class PoseConfig:
    """What to build: a detector and, unless ``spatial`` is None, a spatial model on its heatmaps."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)  # the part detector's sizes
    spatial: SpatialConfig | None = None  # the MRF; None for the detector alone

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints."""
        return {"detector": asdict(self.detector), "spatial": None if self.spatial is None else asdict(self.spatial)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoseConfig:
        """Inverse of :meth:`to_dict` (lists become tuples again)."""
        spatial = data.get("spatial")
        return cls(
            detector=_dataclass_from_dict(DetectorConfig, data["detector"]),
            spatial=None if spatial is None else _dataclass_from_dict(SpatialConfig, spatial),
        )


def _dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


def spatial_config_for(detector: DetectorConfig, **overrides: Any) -> SpatialConfig:
    """A SpatialConfig whose heatmap size matches the detector's output for its training input size."""
    side = detector.input_size // detector.stride
    return SpatialConfig(num_joints=detector.num_joints, heatmap_size=(side, side), **overrides)


class PoseModel(nn.Module):
    """Part detector + optional spatial model.

    Shapes: image (B, 3, S, S) in [0, 1] -> dict with ``detector`` logits (B, K, S/4, S/4) and, with a spatial
    model, ``spatial`` log-beliefs of the same shape. The spatial model needs S == ``config.detector.input_size``.
    """

    def __init__(self, config: PoseConfig) -> None:
        super().__init__()
        self.config = config
        self.detector = PartDetector(config.detector)
        self.spatial = None if config.spatial is None else SpatialModel(config.spatial)

    def forward(self, image: torch.Tensor, use_spatial: bool = True) -> dict[str, torch.Tensor]:
        out = {"detector": self.detector(image)}  # (B, K, H, W)
        if self.spatial is not None and use_spatial:
            with torch.autocast(device_type=image.device.type, enabled=False):
                out["spatial"] = self.spatial(out["detector"].float())  # (B, K, H, W)
        return out
