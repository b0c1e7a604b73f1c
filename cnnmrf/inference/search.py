"""Person search: torso-box proposals in a photo from a multi-scale scan with the part detector, and box overlap/NMS.

Used when no torso box is given. The part detector is fully convolutional, so it scans the whole photo resized at a
few scales, each chosen so that one plausible torso height (``SearchConfig.min_fraction`` to ``max_fraction`` of the
image height, geometrically spaced) becomes the torso height the model was trained on, ``input_size / crop_scale``
model-input pixels. At every scale and position a person hypothesis scores the torso channel's logit plus the mean,
over the other joints, of each joint's best logit within ``context`` torso heights (a max-pool), so a torso-like blob
without arms, head and hips nearby scores low. The best local maxima of that score map at each scale become
proposals: a torso box centred on the (sub-pixel refined) peak, as tall as the training torso height at that scale
(2:3 wide). Proposals from this scan and from faces (:mod:`cnnmrf.inference.faces`), gathered by
:class:`cnnmrf.inference.proposals.PersonSearch`, are then verified by the full model
(:mod:`cnnmrf.inference.topdown`); :func:`box_from_joints` re-fits a box to the predicted torso.

Limits: an upper-body model, as FLIC's (people seen from roughly hip level up); torso sizes outside the searched range
and strong rotations are missed; the scale is only known to the search's step (about +-17%), which the re-fit corrects.
The scan's work is bounded (:func:`scan_sizes`): scales whose torso would be a few pixels tall, or whose resized photo
too large (only extreme aspect ratios), are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnmrf.data.geometry import heatmap_to_input
from cnnmrf.joints import JOINT_NAMES, TORSO_PARTS
from cnnmrf.models.detector import PartDetector

TORSO = JOINT_NAMES.index("torso")
BOX_ASPECT = 2.0 / 3.0  # FLIC torso boxes: width / height
# Where a torso box came from (track: a box made from a video person's joints in the frame before).
Source = Literal["scan", "face", "detector", "given", "track"]


@dataclass(frozen=True)
class SearchConfig:
    """Where and how finely the person search looks, and how its proposals are pruned (see the module docstring)."""

    # FLIC test torsos are 0.17-0.45 of the frame height; a portrait's reaches ~0.9. Training's +-25% scale
    # augmentation covers the gaps between scales. The scan's work grows as 1 / min_fraction^2.
    min_fraction: float = 0.16  # smallest torso height searched, as a fraction of the image height
    max_fraction: float = 0.9  # largest torso height searched, as a fraction of the image height
    num_scales: int = 6  # geometrically spaced torso heights between the two (steps of 1.41x)
    context: float = 1.2  # radius, in torso heights, in which the other joints support a torso hypothesis
    peaks_per_scale: int = 2  # local maxima of each scale's score map kept as proposals
    faces: bool = True  # also propose a torso box below each face found (needs a checkpoint's face geometry)
    max_proposals: int = 4  # proposals verified by the full model per photo (the best by scan score, faces first)
    proposal_overlap: float = 0.5  # proposals overlapping a better one more than this (IoU) are dropped unverified
    refine_steps: int = 1  # times each proposal's box is re-fitted to its predicted torso and predicted again
    person_overlap: float = 0.3  # verified people overlapping a more likely one more than this (IoU) are merged ...
    person_inside: float = 0.7  # ... as are those lying this much (share of the smaller box) inside a likelier one
    # Bounds on the scan's work: a torso this few original pixels tall carries no evidence (a tiny image would be
    # enlarged hundreds of times), and a resized photo larger than this (an extreme aspect ratio: the resized size is
    # aspect * (torso_px / torso fraction)^2, whatever the resolution) would take seconds and gigabytes per scale.
    min_torso_pixels: float = 8.0  # scales whose torso height is shorter than this are skipped
    max_scan_pixels: int = 2_000_000  # scales whose resized photo has more pixels than this are skipped


@dataclass
class Proposal:
    """A torso box where a person may be: ``box`` (4,) x1, y1, x2, y2 in original pixels, its ``score`` (higher is
    likelier; scan score or face-detector order), its ``source``, and ``person``, the person detector's probability
    of a torso centred there where that detector ran (evidence for the person score; NaN where it did not)."""

    box: np.ndarray
    score: float
    source: Source
    person: float = float("nan")


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


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    Shapes: a (N, 4), b (M, 4) as x1, y1, x2, y2 -> (N, M).
    """
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)  # (N, M)
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], axis=-1), np.prod(b[:, 2:] - b[:, :2], axis=-1)  # (N,), (M,)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def non_maximum_suppression(
    boxes: np.ndarray, scores: np.ndarray, overlap: float, containment: float = 1.0
) -> np.ndarray:
    """Greedy NMS: visit boxes best score first, keep one unless it overlaps an already kept box more than
    ``overlap`` (IoU) or lies inside one by more than ``containment`` of its own area (1: never).

    Shapes: boxes (N, 4), scores (N,) -> kept indices (M,), best first.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    iou = box_iou(boxes, boxes)  # (N, N)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # (N,)
    inter = iou * (area[:, None] + area[None, :]) / (1 + iou)  # (N, N) intersection areas
    inside = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-12)  # (N, N) share of the smaller
    kept: list[int] = []
    for i in order:
        if all(iou[i, j] <= overlap and inside[i, j] <= containment for j in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def merge_people(boxes: np.ndarray, scores: np.ndarray, config: SearchConfig) -> np.ndarray:
    """Indices of the people kept when overlapping ones are merged (:func:`non_maximum_suppression` with the
    config's ``person_overlap`` and ``person_inside``). Shapes: (N, 4), (N,) -> (M,), likeliest first."""
    return non_maximum_suppression(boxes, scores, config.person_overlap, config.person_inside)


def search_heights(image_height: float, config: SearchConfig) -> np.ndarray:
    """(num_scales,) torso heights searched, in original pixels, smallest first."""
    return np.geomspace(config.min_fraction * image_height, config.max_fraction * image_height, config.num_scales)


def scan_sizes(
    image_size: tuple[int, int], torso_px: float, decode_factor: float, config: SearchConfig
) -> list[tuple[int, int]]:
    """The (width, height) the photo is resized to at each scale the scan runs, smallest torso first: each scale of
    :func:`search_heights` makes its torso height ``torso_px`` pixels tall, except those the config's work bounds skip
    (a torso under ``min_torso_pixels`` original pixels, or more than ``max_scan_pixels`` resized pixels).

    Args:
        image_size: (width, height) of the decoded photo.
        torso_px: torso height the model was trained on, in model-input pixels.
        decode_factor: original pixels per decoded pixel.
        config: the searched torso sizes and the work bounds.
    """
    width, height = image_size
    sizes = []
    for torso_height in search_heights(height * decode_factor, config):
        factor = torso_px / torso_height * decode_factor  # decoded pixels -> resized pixels
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if torso_height >= config.min_torso_pixels and size[0] * size[1] <= config.max_scan_pixels:
            sizes.append(size)
    return sizes


def person_score_map(logits: torch.Tensor, radius: int, torso: int = TORSO) -> torch.Tensor:
    """Torso hypothesis scores: the torso logit plus the mean over the other joints of their best logit nearby.

    Shapes: logits (K, H, W) -> (H, W).
    """
    others = torch.cat([logits[:torso], logits[torso + 1 :]])  # (K-1, H, W)
    k = 2 * radius + 1  # square window max, done separably (rows, then columns): O(k) instead of O(k^2)
    support = F.max_pool2d(others[None], (1, k), stride=1, padding=(0, radius))  # (1, K-1, H, W)
    support = F.max_pool2d(support, (k, 1), stride=1, padding=(radius, 0))[0]  # (K-1, H, W)
    return logits[torso] + support.mean(dim=0)  # (H, W)


def local_peaks(scores: torch.Tensor, count: int, radius: int) -> torch.Tensor:
    """Up to ``count`` local maxima of a score map, best first: cells that are the maximum of their
    (2 * radius + 1)^2 window.

    Shapes: scores (H, W) -> (M, 2) integer (x, y), M <= count.
    """
    window = F.max_pool2d(scores[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]  # (H, W)
    ys, xs = torch.nonzero(scores >= window, as_tuple=True)  # (P,) each
    best = torch.argsort(scores[ys, xs], descending=True)[:count]
    return torch.stack([xs[best], ys[best]], dim=-1)  # (M, 2)


@torch.no_grad()
def scan_proposals(
    detector: PartDetector,
    image: Image.Image,
    torso_px: float,
    decode_factor: float = 1.0,
    config: SearchConfig | None = None,
    device: torch.device | str = "cpu",
) -> list[Proposal]:
    """Torso-box proposals from scanning a photo with the part detector at several scales (see the module docstring).

    Args:
        detector: the part detector (eval mode, on ``device``).
        image: the RGB photo, decoded with ``decode_factor``.
        torso_px: torso height the model was trained on, in model-input pixels (``input_size / crop_scale``).
        decode_factor: original pixels per decoded pixel.
        config: the searched torso sizes and peaks kept (default :class:`SearchConfig`).
        device: where the detector lives.

    Returns:
        ``config.peaks_per_scale`` proposals per scale (fewer where the map has fewer peaks), boxes in original pixels;
        none from the scales :func:`scan_sizes` skips.
    """
    config = config or SearchConfig()
    stride = detector.config.stride
    multiple = stride * 2 ** (detector.config.num_scales - 1)  # padded sides are a multiple of this ...
    smallest = 4 * 2 ** (detector.config.num_scales - 1)  # ... and at least this: a bank pools 4x; the coarsest
    # level's input is smaller still by 2^(num_scales - 1), and must not pool down to nothing
    radius = max(1, round(config.context * torso_px / stride))
    width, height = image.size
    proposals: list[Proposal] = []
    for size in scan_sizes(image.size, torso_px, decode_factor, config):
        resized = np.array(image.resize(size, Image.BILINEAR), dtype=np.uint8)  # (h, w, 3)
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w)
        pad_h, pad_w = (max(-n % multiple, smallest - n) for n in (size[1], size[0]))
        x = F.pad(x, (0, pad_w, 0, pad_h)).contiguous(memory_format=torch.channels_last)  # NHWC: faster on CPUs
        logits = detector(x)[0].float()  # (K, H', W')
        logits = logits[:, : -(-size[1] // stride), : -(-size[0] // stride)]  # (K, H, W): drop the padding
        scores = person_score_map(logits, radius).cpu()  # (H, W)
        fx, fy = size[0] / width, size[1] / height  # actual resize factors per axis
        peaks = local_peaks(scores, config.peaks_per_scale, max(1, radius // 2))  # (M, 2)
        # Proposals sit on the peak's cell centre, not a sub-pixel refinement of it: the full model re-fits every box
        # (TopDown.candidates), and a sub-pixel offset read off a bfloat16 scan moves with its rounding, which
        # then changed which people were found (an integer peak is the same in float32 and bfloat16).
        for px, py in peaks.tolist():
            qx, qy = heatmap_to_input(np.array([px, py], dtype=np.float64), stride)  # resized-image pixels
            # resized -> decoded -> original pixels (integer pixel centres throughout), clipped: the last heatmap
            # cells reach a few resized pixels past the image edge
            cx = float(np.clip(decode_factor * (qx + 0.5) / fx - 0.5, 0, width * decode_factor - 1))
            cy = float(np.clip(decode_factor * (qy + 0.5) / fy - 0.5, 0, height * decode_factor - 1))
            score = float(scores[py, px])
            proposals.append(Proposal(torso_box(cx, cy, torso_px * decode_factor / fy), score, "scan"))
    return proposals
