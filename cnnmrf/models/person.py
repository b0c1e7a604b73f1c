"""Person detector: a small fully convolutional network giving torso-box centres, heights and offsets (CenterNet-like).

One pass over a whole (downscaled) photo gives, per output cell (stride 4), a centre logit, the log torso-box height
and the sub-cell offset of the centre; :func:`cnnmrf.inference.person_boxes.decode_boxes` turns them into boxes.
Checkpoints of it are a format of their own (:data:`PERSON_CHECKPOINT_FORMAT`), written and read here.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_write_bytes

PERSON_CHECKPOINT_FORMAT = "cnnmrf-person-checkpoint-v1"
# What an exported checkpoint keeps besides the model (records of its training; no optimiser or schedule state).
PERSON_RECORD_KEYS = ("train_config", "epoch", "best_recall", "run")
CENTRE_PRIOR = 0.01  # the centre heads' initial probability (CenterNet's bias trick: few cells hold a centre)


@dataclass
class PersonDetectorConfig:
    """Sizes of the person detector: an encoder down to stride 32, a top-down path back to stride 4, three heads."""

    widths: tuple[int, ...] = (16, 32, 64, 96, 128)  # channels at strides 2, 4, 8, 16, 32
    head_channels: int = 32  # width of the top-down path and of the shared head convolution
    batch_norm: bool = True  # BatchNorm after each convolution

    @property
    def stride(self) -> int:
        """Input pixels per output cell (4)."""
        return 4

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (the encoder's stride)."""
        return 2 ** len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any) -> PersonDetectorConfig:
        """Rebuild a config from :meth:`to_dict`'s output.

        Raises:
            ValueError: unknown keys, wrong types or sizes out of range.
        """
        if not isinstance(data, dict) or set(data) - {f.name for f in fields(cls)}:
            raise ValueError(f"not a person detector config: {data!r}")
        widths = tuple(data.get("widths", cls.widths))
        head = data.get("head_channels", cls.head_channels)
        norm = data.get("batch_norm", cls.batch_norm)
        if not 3 <= len(widths) <= 6 or not all(isinstance(w, int) and 1 <= w <= 1024 for w in widths):
            raise ValueError(f"widths must be 3 to 6 sizes from 1 to 1024, not {widths}")
        if not isinstance(head, int) or not 1 <= head <= 1024 or not isinstance(norm, bool):
            raise ValueError("head_channels must be 1 to 1024 and batch_norm a bool")
        return cls(widths=widths, head_channels=head, batch_norm=norm)


def _conv(cin: int, cout: int, stride: int, batch_norm: bool, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution ('same' padding, optional stride or dilation) + optional BatchNorm + ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PersonDetector(nn.Module):
    """Torso-box centres, heights and offsets in one pass.

    Shapes: image (B, 3, H, W) in [0, 1], H and W multiples of ``config.multiple`` -> dict of ``heat`` (B, 1, H/4,
    W/4) centre logits, ``size`` (B, 1, H/4, W/4) log(torso-box height / 4), ``offset`` (B, 2, H/4, W/4) the centre
    minus its cell (x, y), in cells.
    """

    def __init__(self, config: PersonDetectorConfig) -> None:
        super().__init__()
        self.config = config
        c, bn, w = config.head_channels, config.batch_norm, config.widths
        self.stem = _conv(3, w[0], 2, bn)  # (B, w0, H/2, W/2)
        # Level i (stride 2^(i+2)): a strided convolution and one more; the deepest adds a dilated one for context.
        self.levels = nn.ModuleList(
            nn.Sequential(_conv(w[i], w[i + 1], 2, bn), _conv(w[i + 1], w[i + 1], 1, bn)) for i in range(len(w) - 1)
        )
        self.context = _conv(w[-1], w[-1], 1, bn, dilation=2)
        self.lateral = nn.ModuleList(nn.Conv2d(w[i], c, 1) for i in range(1, len(w)))  # strides 4 .. 2^len(w)
        self.smooth = nn.ModuleList(_conv(c, c, 1, bn) for _ in range(len(w) - 2))  # after each upsampling
        self.shared = _conv(c, c, 1, bn)
        self.heat = nn.Conv2d(c, 1, 1)
        self.size = nn.Conv2d(c, 1, 1)
        self.offset = nn.Conv2d(c, 2, 1)
        nn.init.constant_(self.heat.bias, -math.log((1 - CENTRE_PRIOR) / CENTRE_PRIOR))
        nn.init.constant_(self.size.bias, math.log(40 / config.stride))  # a typical torso, 40 px
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = image.shape[-2:]
        if h % self.config.multiple or w % self.config.multiple:
            raise ValueError(f"input sides must be multiples of {self.config.multiple}, not {h}x{w}")
        x = self.stem((image - self.mean) / self.std)  # (B, w0, H/2, W/2)
        features = []
        for level in self.levels:
            x = level(x)  # (B, w_i, H/2^(i+2), W/2^(i+2))
            features.append(x)
        top = self.lateral[-1](self.context(features[-1]))  # (B, C, H/32, W/32)
        for i in range(len(features) - 2, -1, -1):  # strides 16, 8, 4
            lateral = self.lateral[i](features[i])  # (B, C, H/2^(i+2), W/2^(i+2))
            top = F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            top = self.smooth[i](top)
        body = self.shared(top)  # (B, C, H/4, W/4)
        return {"heat": self.heat(body), "size": self.size(body), "offset": self.offset(body)}


def _small() -> PersonDetectorConfig:
    return PersonDetectorConfig()


def _tiny() -> PersonDetectorConfig:
    # For tests and smoke runs only.
    return PersonDetectorConfig(widths=(8, 8, 8, 8), head_channels=8)


PERSON_PRESETS: dict[str, Callable[[], PersonDetectorConfig]] = {"small": _small, "tiny": _tiny}


def save_person_checkpoint(path: Path, model: PersonDetector, **extra: Any) -> None:
    """Write the model's config and weights, plus plain ``extra`` entries (training records and state), atomically.

    Raises:
        CnnmrfError: ``path`` cannot be written, naming it; an older ``path`` is kept.
    """
    state = {"format": PERSON_CHECKPOINT_FORMAT, "model_config": model.config.to_dict(), "model": model.state_dict()}
    buffer = io.BytesIO()
    torch.save({**state, **extra}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_person_checkpoint(path: Path) -> dict[str, Any]:
    """Load a person detector checkpoint with ``weights_only=True`` (no code is run) and check its config and weights.

    Raises:
        CnnmrfError: missing, unreadable, not a person detector checkpoint, or holding invalid contents; naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnmrfError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        if not f.read(4).startswith(b"PK\x03\x04"):  # torch.save writes zip archives
            raise CnnmrfError(f"{path} is not a readable checkpoint (not a file written by torch.save)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CnnmrfError(f"refusing to load {path}: it holds objects other than weights") from err
    except Exception as err:  # damaged files fail in many ways
        raise CnnmrfError(f"{path} is not a readable checkpoint (truncated or corrupt?)") from err
    if not isinstance(state, dict) or state.get("format") != PERSON_CHECKPOINT_FORMAT:
        raise CnnmrfError(f"{path} is not a person detector checkpoint (from `cnnmrf train-person`)")
    try:
        PersonDetectorConfig.from_dict(state.get("model_config"))
    except ValueError as err:
        raise CnnmrfError(f"checkpoint {path} records an invalid model config: {err}") from err
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise CnnmrfError(f"checkpoint {path} holds no model weights (a dict of tensors)")
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in weights.values()):
        raise CnnmrfError(f"checkpoint {path} holds non-finite weights (NaN or infinity)")
    return state


def person_detector_from(state: dict[str, Any], where: str = "the checkpoint") -> PersonDetector:
    """The PersonDetector of a loaded checkpoint, weights loaded, in eval mode.

    Raises:
        CnnmrfError: the weights do not fit the recorded config.
    """
    model = PersonDetector(PersonDetectorConfig.from_dict(state["model_config"]))
    # float16-stored weights (an export, :func:`export_person_weights`) are computed with in float32
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CnnmrfError(f"the weights in {where} do not fit its model config") from err
    return model.eval()


def export_person_weights(source: Path, target: Path, half: bool = True) -> None:
    """Copy a person detector checkpoint without its optimiser, schedule and random state, the model's floating-point
    weights stored as float16 (``half``; loaded into float32 by :func:`person_detector_from`): a sixth of a training
    checkpoint's size, boxes equal to within float16 rounding. This is how the bundled person weights are made from a
    `cnnmrf train-person` run's ``best.pt``.

    Raises:
        CnnmrfError: ``source`` is not a loadable person detector checkpoint, or ``target`` cannot be written.
    """
    state = load_person_checkpoint(source)
    model = person_detector_from(state, str(source))  # checks that the weights fit the config
    weights = model.state_dict()
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    records = {key: state[key] for key in PERSON_RECORD_KEYS if key in state}
    exported = {"format": PERSON_CHECKPOINT_FORMAT, "model_config": model.config.to_dict(), "model": weights}
    buffer = io.BytesIO()
    torch.save({**exported, **records, "weights_dtype": "float16" if half else "float32"}, buffer)
    atomic_write_bytes(target, buffer.getbuffer())
