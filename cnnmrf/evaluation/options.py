"""How to run an evaluation or a calibration: which examples, and the model's settings (no numpy or torch, for the
command line)."""

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
    # with split val: the share held out in training (None: the checkpoint's TrainConfig.val_fraction; see
    # cnnmrf.evaluation.holdout)
    val_fraction: float | None = None
    seed: int | None = None  # with split val: the training run's --seed, which drew the held-out rows (None: its own)
    limit: int | None = None  # only the first N examples
    force: bool = False  # overwrite existing outputs


@dataclass
class CalibrateOptions:
    """Which frames calibration is fitted on, and what the default threshold must achieve."""

    val_fraction: float | None = None  # the training run's validation share (None: the checkpoint's, as recorded)
    seed: int | None = None  # the training run's --seed, which drew the validation rows (None: the checkpoint's)
    max_frames: int = 0  # validation frames used for faces and the verifier (0: all)
    clutter: int = 200  # person-free photos added as negatives (half synthetic, half crops of scikit-image's)
    max_false_rate: float = 0.05  # the default --min-score lets at most this share of person-free photos get a person
    precision: Precision = Precision.auto  # the detector's arithmetic: bf16 where native, else fp32


@dataclass(frozen=True)
class CalibrateMinimums:
    """The least evidence `calibrate` fits on; less is refused (before the long work where it can be known), as a
    calibration fitted on a few frames, or checked on a few photos, would be stored as if it were a sound one."""

    frames: int = 30  # validation frames searched (for the person verifier and the face geometry)
    people: int = 20  # annotated people the search finds in them (the verifier's positives), and as many non-people
    check_photos: int = 20  # person-free photos (half of --clutter) the default --min-score is checked on (1 is 5%)


MINIMUMS = CalibrateMinimums()
