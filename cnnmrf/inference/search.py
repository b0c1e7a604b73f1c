"""Person search: find the torso box of the best-scoring person in a photo by scanning it with the part detector.

Used when no torso box is given. The part detector is fully convolutional, so it scans the whole
photo resized at a few scales, each chosen so that one plausible torso height (``SearchConfig.min_fraction`` to
``max_fraction`` of the image height, geometrically spaced) becomes the torso height the model was trained on,
``input_size / crop_scale`` model-input pixels. At every scale and position a person hypothesis scores the torso
channel's logit plus the mean, over the other joints, of each joint's best logit within ``context`` torso heights
(a max-pool), so a torso-like blob without arms, head and hips nearby scores low. The best (scale, position) over all
scales gives the torso box: centred on the (sub-pixel refined) peak, as tall as the training torso height at that
scale (2:3 wide). The crop around that box then goes through the full model exactly as with a given ``--box``; the
box is then re-fitted to the predicted torso (centred on the ``torso`` joint, as tall as the shoulder-to-hip
distance) and the crop predicted again, ``SearchConfig.refine_steps`` times, which corrects the search's coarse scale.

Limits: one person per image (the best-scoring one); an upper-body model, as FLIC's (people seen from roughly hip
level up); torso sizes outside the searched range, strong rotations and crowded frames are missed or confused; the
scale is only known to the search's step (about +-16%, within the training augmentation's +-25%); it works best when
the person fills a good part of the frame, as in FLIC's movie stills.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnmrf.data.geometry import heatmap_to_input
from cnnmrf.data.heatmaps import decode_heatmaps
from cnnmrf.joints import JOINT_NAMES, TORSO_PARTS
from cnnmrf.models.detector import PartDetector

TORSO = JOINT_NAMES.index("torso")
BOX_ASPECT = 2.0 / 3.0  # FLIC torso boxes: width / height


@dataclass(frozen=True)
class SearchConfig:
    """Where and how finely the person search looks (see the module docstring)."""

    # Training's +-25% scale augmentation stretches the range covered to about 0.2..1.0 of the image height. Each
    # extra scale, or a smaller min_fraction, costs time: the detector's work grows as 1 / min_fraction^2.
    min_fraction: float = 0.25  # smallest torso height searched, as a fraction of the image height
    max_fraction: float = 0.8  # largest torso height searched, as a fraction of the image height
    num_scales: int = 5  # geometrically spaced torso heights between the two (steps of 1.34x)
    context: float = 1.2  # radius, in torso heights, in which the other joints support a torso hypothesis
    refine_steps: int = 2  # times the found box is re-fitted to the predicted shoulders and hips, then re-predicted


@dataclass
class PersonHypothesis:
    """The best person found: ``box`` (4,) torso box in original pixels, and its ``score``."""

    box: np.ndarray
    score: float


def torso_box(cx: float, cy: float, height: float) -> np.ndarray:
    """(4,) FLIC-style torso box (2:3 wide) centred on (cx, cy)."""
    half_w, half_h = BOX_ASPECT * height / 2, height / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=np.float64)


def box_from_joints(
    joints: np.ndarray, previous: np.ndarray, image_size: tuple[int, int], max_change: float = 1.5
) -> np.ndarray:
    """Torso box implied by predicted joints: centred on the ``torso`` joint (kept inside the image), as tall as the
    distance between the shoulders' and hips' midpoints (on FLIC the torso box height is 0.99x that distance, median
    over the training split), its height kept within ``max_change``x of the ``previous`` box's.

    Shapes: joints (K, 2) original pixels, previous (4,) -> (4,); image_size is (width, height).
    """
    lsho, rsho, lhip, rhip = TORSO_PARTS
    shoulders = joints[[lsho, rsho]].mean(axis=0)  # (2,)
    hips = joints[[lhip, rhip]].mean(axis=0)  # (2,)
    before = previous[3] - previous[1]
    height = float(np.clip(np.linalg.norm(shoulders - hips), before / max_change, before * max_change))
    centre = np.clip(joints[TORSO], 0, np.asarray(image_size, dtype=np.float64) - 1)  # (2,)
    return torso_box(*centre, height)


def search_heights(image_height: float, config: SearchConfig) -> np.ndarray:
    """(num_scales,) torso heights searched, in original pixels, smallest first."""
    return np.geomspace(config.min_fraction * image_height, config.max_fraction * image_height, config.num_scales)


def person_score_map(logits: torch.Tensor, radius: int, torso: int = TORSO) -> torch.Tensor:
    """Torso hypothesis scores: the torso logit plus the mean over the other joints of their best logit nearby.

    Shapes: logits (K, H, W) -> (H, W).
    """
    others = torch.cat([logits[:torso], logits[torso + 1 :]])  # (K-1, H, W)
    k = 2 * radius + 1  # square window max, done separably (rows, then columns): O(k) instead of O(k^2)
    support = F.max_pool2d(others[None], (1, k), stride=1, padding=(0, radius))  # (1, K-1, H, W)
    support = F.max_pool2d(support, (k, 1), stride=1, padding=(radius, 0))[0]  # (K-1, H, W)
    return logits[torso] + support.mean(dim=0)  # (H, W)


@torch.no_grad()
def find_person(
    detector: PartDetector,
    image: Image.Image,
    torso_px: float,
    decode_factor: float = 1.0,
    config: SearchConfig | None = None,
    device: torch.device | str = "cpu",
) -> PersonHypothesis:
    """Find the best-scoring person in a photo by scanning it with the part detector at several scales.

    Args:
        detector: the part detector (eval mode, on ``device``).
        image: the RGB photo, decoded with ``decode_factor``.
        torso_px: torso height the model was trained on, in model-input pixels (``input_size / crop_scale``).
        decode_factor: original pixels per decoded pixel.
        config: the searched torso sizes (default :class:`SearchConfig`).
        device: where the detector lives.

    Returns:
        The best hypothesis, box in original-image pixels.
    """
    config = config or SearchConfig()
    stride = detector.config.stride
    multiple = stride * 2 ** (detector.config.num_scales - 1)  # every pyramid level must divide evenly
    radius = max(1, round(config.context * torso_px / stride))
    width, height = image.size
    best: PersonHypothesis | None = None
    for torso_height in search_heights(height * decode_factor, config):
        factor = torso_px / torso_height * decode_factor  # decoded pixels -> resized pixels
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        resized = np.array(image.resize(size, Image.BILINEAR), dtype=np.uint8)  # (h, w, 3)
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w)
        pad_h, pad_w = -size[1] % multiple, -size[0] % multiple
        logits = detector(F.pad(x, (0, pad_w, 0, pad_h)))[0].float()  # (K, H', W')
        logits = logits[:, : -(-size[1] // stride), : -(-size[0] // stride)]  # (K, H, W): drop the padding
        scores = person_score_map(logits, radius)  # (H, W)
        (peak,), (score,) = decode_heatmaps(scores[None].cpu(), refine=True)  # (1, 2), (1,)
        if best is None or float(score) > best.score:
            fx, fy = size[0] / width, size[1] / height  # actual resize factors per axis
            qx, qy = heatmap_to_input(peak.double().numpy(), stride)  # resized-image pixels
            # resized -> decoded -> original pixels (integer pixel centres throughout)
            # (clipped: the last heatmap cells reach a few resized pixels past the image edge)
            cx = float(np.clip(decode_factor * (qx + 0.5) / fx - 0.5, 0, width * decode_factor - 1))
            cy = float(np.clip(decode_factor * (qy + 0.5) / fy - 0.5, 0, height * decode_factor - 1))
            best = PersonHypothesis(torso_box(cx, cy, torso_px * decode_factor / fy), float(score))
    assert best is not None
    return best
