"""The training configuration shared by `train-detector`, `train-mrf` and `train-joint`, with each stage's defaults."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnmrf.devices import Device, Precision
from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # the dataset module loads numpy and torch: imported when a config is made, not when this module is
    from cnnmrf.data.dataset import AugmentConfig


class Stage(str, enum.Enum):
    """What a run trains."""

    detector = "detector"  # the part detector alone (paper section 3.1)
    mrf = "mrf"  # the spatial model on the heatmaps of a frozen detector (section 3.2)
    joint = "joint"  # detector and spatial model together, by back-propagation


# The detector presets of cnnmrf.models.detector.DETECTOR_PRESETS, as choices: named here, so that the command line
# lists them without loading torch (tests/test_cli_help.py checks that the two agree).
PRESETS: tuple[str, ...] = ("small", "small-hr", "paper", "tiny")
Preset = enum.Enum("Preset", [(name, name) for name in PRESETS], type=str)  # type: ignore[misc]


class Optimizer(str, enum.Enum):
    """The optimiser."""

    adam = "adam"
    sgd = "sgd"  # with Nesterov momentum


class Loss(str, enum.Enum):
    """The heatmap loss (cnnmrf.losses.LOSSES)."""

    ce = "ce"  # spatial-softmax cross-entropy
    mse = "mse"  # the paper's mean squared error


class Schedule(str, enum.Enum):
    """The learning rate after warmup."""

    cosine = "cosine"  # cosine decay to 1% of the peak
    constant = "constant"


@dataclass(frozen=True)
class StageDefaults:
    """What differs between the stages' defaults."""

    epochs: int  # passes over the training examples
    lr: float  # peak learning rate of the part detector (train-mrf freezes it)


STAGE_DEFAULTS: dict[Stage, StageDefaults] = {
    Stage.detector: StageDefaults(epochs=40, lr=1e-3),
    Stage.mrf: StageDefaults(epochs=3, lr=1e-3),
    Stage.joint: StageDefaults(epochs=10, lr=5e-4),  # fine-tuning: lower than the detector's own training
}


def _default_augment() -> AugmentConfig:
    """The default training augmentations."""
    from cnnmrf.data.dataset import AugmentConfig

    return AugmentConfig()


@dataclass
class TrainConfig:
    """Everything that shapes a training run (saved in every checkpoint, choices as plain strings).

    Choice fields accept their Enum or its value (``stage="joint"``); ``epochs`` and ``lr`` left as None take the
    stage's defaults (:data:`STAGE_DEFAULTS`), so ``TrainConfig(stage="joint")`` is what ``cnnmrf train-joint`` runs.

    Raises:
        CnnmrfError: a choice field holds no valid choice, or ``val_fraction`` or ``seed`` is out of range.
    """

    stage: Stage = Stage.detector  # what to train
    preset: Preset = Preset["small-hr"]  # detector preset: small-hr (the bundled one), small (stride 4), paper, tiny
    epochs: int | None = None  # passes over the training examples (None: the stage's default)
    batch_size: int = 16  # examples per step (per process under torchrun)
    optimizer: Optimizer = Optimizer.adam  # adam or sgd (with momentum)
    lr: float | None = None  # peak learning rate of the part detector (None: the stage's default)
    spatial_lr: float = 0.03  # peak learning rate of the spatial model (its kernels and biases act in log space)
    momentum: float = 0.9  # SGD momentum (Adam: beta1)
    weight_decay: float = 1e-4  # L2 on convolution weights only (not biases, BatchNorm or MRF kernels)
    schedule: Schedule = Schedule.cosine  # cosine (to 1% of lr) or constant, after warmup
    warmup_steps: int = 200  # linear learning-rate warmup
    grad_clip: float = 10.0  # max global gradient norm (0: off)
    loss: Loss = Loss.ce  # ce (spatial-softmax cross-entropy) or mse (the paper's)
    # train-joint: weight of the detector's own loss next to the spatial model's. 0 supervises only the final output,
    # as in the paper's joint training: the detector may then keep several candidates for the spatial model to choose
    # from (measured in docs/results.md).
    detector_loss_weight: float = 0.0
    val_fraction: float = 0.1  # share of the training split held out for validation (never the test split)
    val_limit: int = 0  # cap on validation examples (0: all held-out ones)
    seed: int = 0  # seeds initialisation, the train/val split, shuffling and augmentation
    workers: int = 2  # DataLoader worker processes
    device: Device = Device.auto  # auto, cpu or cuda
    precision: Precision = Precision.auto  # detector arithmetic: bf16 where native (AMX, AVX512-BF16, CUDA), else fp32
    max_steps_per_epoch: int = 0  # cut epochs short (0: full epochs); for smoke tests
    augment: AugmentConfig = field(default_factory=_default_augment)  # training augmentations

    def __post_init__(self) -> None:
        self.stage = as_choice(Stage, self.stage, "stage")
        self.preset = as_choice(Preset, self.preset, "--preset")
        self.optimizer = as_choice(Optimizer, self.optimizer, "--optimizer")
        self.schedule = as_choice(Schedule, self.schedule, "schedule")
        self.loss = as_choice(Loss, self.loss, "--loss")
        self.device = as_choice(Device, self.device, "--device")
        self.precision = as_choice(Precision, self.precision, "--precision")
        if not 0.0 <= self.val_fraction < 1.0:  # NaN fails this too
            raise CnnmrfError(f"--val-fraction must be at least 0 and below 1, not {self.val_fraction}")
        if self.seed < 0:
            raise CnnmrfError(f"--seed must be at least 0, not {self.seed}")
        defaults = STAGE_DEFAULTS[self.stage]
        if self.epochs is None:
            self.epochs = defaults.epochs
        if self.lr is None:
            self.lr = defaults.lr


def as_choice(kind: type[enum.Enum], value: Any, name: str) -> Any:
    """``value`` as a member of the Enum ``kind``.

    Raises:
        CnnmrfError: it is none of the members or their values.
    """
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise CnnmrfError(f"{name} must be one of {choices}, not {value!r}") from None
