"""The training configuration shared by `train-detector`, `train-mrf` and `train-joint`."""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnmrf.data.dataset import AugmentConfig
from cnnmrf.devices import Precision

STAGES = ("detector", "mrf", "joint")


@dataclass
class TrainConfig:
    """Everything that shapes a training run (saved in every checkpoint)."""

    stage: str = "detector"  # detector (part detector alone), mrf (spatial model on a frozen detector) or joint
    preset: str = "small"  # detector preset: small (2-core CPU), paper (the paper's widths, for a GPU) or tiny
    epochs: int = 40  # passes over the training examples
    batch_size: int = 16  # examples per step (per process under torchrun)
    optimizer: str = "adam"  # adam or sgd (with momentum)
    lr: float = 1e-3  # peak learning rate of the part detector
    spatial_lr: float = 0.03  # peak learning rate of the spatial model (its kernels and biases act in log space)
    momentum: float = 0.9  # SGD momentum (Adam: beta1)
    weight_decay: float = 1e-4  # L2 on convolution weights only (not biases, BatchNorm or MRF kernels)
    schedule: str = "cosine"  # cosine (to 1% of lr) or constant, after warmup
    warmup_steps: int = 200  # linear learning-rate warmup
    grad_clip: float = 10.0  # max global gradient norm (0: off)
    loss: str = "ce"  # ce (spatial-softmax cross-entropy) or mse (the paper's)
    # train-joint: weight of the detector's own loss next to the spatial model's. 0 supervises only the final output,
    # as in the paper's joint training: the detector may then keep several candidates for the spatial model to choose
    # from (measured in docs/results.md).
    detector_loss_weight: float = 0.0
    val_fraction: float = 0.1  # share of the training split held out for validation (never the test split)
    val_limit: int = 0  # cap on validation examples (0: all held-out ones)
    seed: int = 0  # seeds initialisation, the train/val split, shuffling and augmentation
    workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # auto, cpu or cuda
    precision: Precision = Precision.auto  # detector arithmetic: bf16 where native (AMX, AVX512-BF16, CUDA), else fp32
    max_steps_per_epoch: int = 0  # cut epochs short (0: full epochs); for smoke tests
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentations
