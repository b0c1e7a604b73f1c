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
    def from_dict(cls, data: object) -> PoseConfig:
        """Inverse of :meth:`to_dict` (lists become tuples again), checked: every setting of its type and in a sane
        range (a checkpoint may have been edited); settings added since it was written take their defaults, those of a
        newer version are ignored.

        Raises:
            ValueError: the first setting of another type or out of range.
        """
        if not isinstance(data, dict) or "detector" not in data or set(data) - {"detector", "spatial"}:
            raise ValueError("model_config must be a dict with 'detector' and 'spatial'")
        spatial = data.get("spatial")
        return cls(
            detector=_dataclass_from_dict(DetectorConfig, data["detector"], "detector"),
            spatial=None if spatial is None else _dataclass_from_dict(SpatialConfig, spatial, "spatial"),
        )


# Ranges of the model settings beyond "a positive integer" (ints) and "a finite number >= 0" (floats).
_RANGES: dict[str, tuple[float, float]] = {
    "input_size": (16, 4096),
    "head_kernel": (1, 31),
    "num_scales": (1, 5),
    "output_stride": (2, 4),
    "num_joints": (1, 100),
    "eps": (1e-12, 1.0),
}
_CHOICES: dict[str, tuple[Any, ...]] = {"output_stride": (2, 4), "unary": ("log_softmax", "raw")}


def _check_value(name: str, value: Any, default: Any) -> Any:
    """``value`` (a list as a tuple) if it is of the type of ``default`` and in range; else ValueError."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ValueError(f"{name} is {value!r}, not a list of {len(default)} integers")
        return tuple(_check_value(name, v, default[0]) for v in value)
    least, most = _RANGES.get(name.rsplit(".", 1)[-1], (1 if isinstance(default, int) else 0.0, 4096))
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and least <= value <= most
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and least <= value <= most
    else:
        ok = isinstance(value, type(default))
    choices = _CHOICES.get(name.rsplit(".", 1)[-1])
    if not ok or (choices is not None and value not in choices):
        raise ValueError(f"{name} is {value!r}, which is not a valid setting")
    return value


def _dataclass_from_dict(cls: type, data: object, prefix: str) -> Any:
    """An instance of the config dataclass ``cls`` from its dict, every setting it knows checked."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix} is {type(data).__name__}, not a dict of settings")
    # A setting missing was added since the checkpoint was written (its default is the old behaviour); an unknown one
    # comes from a newer version and is ignored: the weights, which must fit the model exactly, check the architecture.
    known, defaults = {f.name for f in fields(cls)}, cls()
    return cls(**{k: _check_value(f"{prefix}.{k}", v, getattr(defaults, k)) for k, v in data.items() if k in known})


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
