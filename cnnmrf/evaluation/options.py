"""How to run an evaluation: which examples, and the model's settings (no numpy or torch, for the command line)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cnnmrf.data.decoding import Decoding
from cnnmrf.devices import Precision


class Split(str, enum.Enum):
    """Which examples to score."""

    test = "test"  # FLIC's test split: the numbers to report
    val = "val"  # the held-out part of the training split: the numbers to tune on


@dataclass
class EvaluateOptions:
    """How to run the model on the test crops."""

    use_spatial: bool = True  # run the spatial model when the checkpoint has one (--no-mrf: detector alone)
    flip_test: bool = False  # average with the mirrored crop
    scales: tuple[float, ...] = (1.0,)  # multi-scale testing zoom factors about the crop centre
    decoding: Decoding = Decoding.dark  # peak decoding: dark (distribution-aware), parabola or argmax
    batch_size: int = 32  # crops per forward pass
    device: str = "auto"  # auto, cpu or cuda
    precision: Precision = Precision.auto  # the detector's arithmetic: bf16 where native, else fp32
    split: Split = Split.test  # test: FLIC's test split (the report); val: the held-out part of the training split
    val_fraction: float = 0.1  # with split val: the share held out, as in training (TrainConfig.val_fraction)
    seed: int = 0  # with split val: the training run's --seed, which drew the held-out rows
    limit: int | None = None  # only the first N examples
    force: bool = False  # overwrite existing outputs
