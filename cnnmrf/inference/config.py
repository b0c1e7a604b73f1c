"""How the pose model is run on crops: one inference config for every caller (evaluate, calibrate, predict, training's
validation) instead of long argument lists."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnmrf.data.heatmaps import DEFAULT_DECODER, Decoder


@dataclass(frozen=True)
class InferenceConfig:
    """The model's settings on a batch of crops (:func:`cnnmrf.inference.crops.predict_crops`)."""

    use_spatial: bool = True  # run the spatial model too (if the model has one): both outputs from one pass
    flip_test: bool = False  # average with the mirrored crops
    scales: tuple[float, ...] = (1.0,)  # multi-scale testing zoom factors about the crop centre (> 1 enlarges)
    # How peaks become sub-pixel positions: DARK with the training targets' sigma by default; give the model's own
    # sigma (PreprocessConfig.heatmap_sigma), and the method (--decoding) where it is a choice.
    decoder: Decoder = DEFAULT_DECODER
    dtype: torch.dtype = torch.float32  # the detector's arithmetic, float32 or bfloat16 (autocast; MRF stays float32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))  # a list from a caller: hashable
