"""The person detector's training configuration (`cnnmrf train-person`), importable without torch."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.training.config import as_choice

# The presets of cnnmrf.models.person.PERSON_PRESETS, named here so the command line lists them without loading torch.
PERSON_PRESET_NAMES: tuple[str, ...] = ("small", "tiny")
PersonPreset = enum.Enum("PersonPreset", [(name, name) for name in PERSON_PRESET_NAMES], type=str)  # type: ignore[misc]
RECALL_AT: tuple[int, ...] = (1, 3, 5)  # validation recall of annotated torso boxes among the top-k boxes
BEST_RECALL_AT = 3  # best.pt is the epoch with the highest recall@3
# Person-free training photos are synthetic_clutter(negatives, NEGATIVE_SEED + seed): far from the seeds `calibrate`
# draws its person-free photos with (the training run's seed and seed + 1), so calibration never sees them.
NEGATIVE_SEED = 100_000
# Options a resumed run may change: where and how fast it runs, and how long.
PERSON_SAFE_TO_CHANGE: tuple[str, ...] = ("workers", "device", "precision", "epochs")


@dataclass
class PersonTrainConfig:
    """Everything that shapes a person detector training run (saved in its checkpoints as plain data).

    Raises:
        CnnmrfError: a choice field holds no valid choice, or a number is out of range.
    """

    preset: PersonPreset = PersonPreset["small"]  # model preset: small, or tiny (tests)
    epochs: int = 30  # passes over the training frames
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # peak Adam learning rate (linear warmup, cosine decay to 1%)
    weight_decay: float = 1e-4  # L2 on convolution weights
    warmup_steps: int = 200  # linear learning-rate warmup
    grad_clip: float = 10.0  # max global gradient norm (0: off)
    input_size: int = 256  # side of the square training images
    val_long_side: int = 320  # validation frames are seen whole, resized to this longer side
    min_torso: float = 6.0  # torso heights drawn from min_torso to max_torso input pixels (log-uniform) ...
    max_torso: float = 320.0  # ... small people to portraits; see cnnmrf.data.person_frames.PersonAugment
    tile: float = 0.2  # share of training images that are 2 x 2 or 3 x 3 grids of whole frames
    background: float = 0.5  # share of training images with a flat colour or person-free photo around the frames
    far_weight: float = 0.1  # weight of negatives in FLIC frames over a torso height from every annotated person
    negative_share: float = 0.1  # share of each epoch's images that are person-free photos
    negatives: int = 200  # how many person-free photos (synthetic clutter) to draw them from
    val_fraction: float = 0.1  # share of the training split's people held out (their frames validate)
    seed: int = 0  # seeds initialisation, the split, shuffling, augmentation and the person-free photos
    workers: int = 1  # DataLoader worker processes
    device: Device = Device.auto  # auto, cpu or cuda
    precision: Precision = Precision.auto  # bf16 where native, else fp32
    max_steps_per_epoch: int = 0  # cut epochs short (0: full epochs); for smoke tests

    def __post_init__(self) -> None:
        self.preset = as_choice(PersonPreset, self.preset, "--preset")
        self.device = as_choice(Device, self.device, "--device")
        self.precision = as_choice(Precision, self.precision, "--precision")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CnnmrfError(f"--val-fraction must be at least 0 and below 1, not {self.val_fraction}")
        if not 0.0 <= self.negative_share < 1.0:
            raise CnnmrfError(f"--negative-share must be at least 0 and below 1, not {self.negative_share}")
        if not 0.0 <= self.tile <= 1.0 or not 1.0 <= self.min_torso <= self.max_torso:
            raise CnnmrfError(f"tile must be from 0 to 1 ({self.tile}), and 1 <= min_torso <= max_torso")
        if not 0.0 <= self.background <= 1.0:
            raise CnnmrfError(f"--background must be from 0 to 1, not {self.background}")
        if not 0.0 <= self.far_weight <= 1.0:
            raise CnnmrfError(f"--far-weight must be from 0 to 1, not {self.far_weight}")
        if self.input_size < 32 or self.input_size % 32 or self.val_long_side < 32:
            raise CnnmrfError(
                f"--input-size must be a multiple of 32 (not {self.input_size}) and --val-long-side at least 32"
            )
        if self.seed < 0 or self.epochs < 1 or self.batch_size < 1:
            raise CnnmrfError("--seed must be at least 0, --epochs and --batch-size at least 1")

    def plain(self) -> dict[str, Any]:
        """The config as plain data (choices as their values)."""
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in vars(self).items()}
