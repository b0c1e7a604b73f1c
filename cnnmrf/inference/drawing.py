"""Drawing a predicted pose: the skeleton over the photo, limbs coloured by the person's left and right side."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnmrf.joints import JOINT_NAMES, SKELETON

# Drawing colours (RGB) by side; "left"/"right" follow the labels (observer-centric: "left" is image-right for a
# person facing the camera). A limb is left or right when its joints are on that side or central, else centre.
SIDE_COLOURS: dict[str, tuple[int, int, int]] = {"left": (0, 220, 255), "right": (255, 0, 200), "centre": (150, 255, 0)}
JOINT_SIDES: tuple[str, ...] = tuple(
    "left" if n[0] == "l" else "right" if n[0] == "r" else "centre" for n in JOINT_NAMES
)


def _limb_side(a: int, b: int) -> str:
    sides = {JOINT_SIDES[a], JOINT_SIDES[b]} - {"centre"}
    return sides.pop() if len(sides) == 1 else "centre"


LIMB_SIDES: tuple[str, ...] = tuple(_limb_side(a, b) for a, b in SKELETON)


def draw_pose(image: Image.Image, joints: np.ndarray) -> Image.Image:
    """A copy of the image with each person's skeleton drawn: limbs coloured by side, a dot on every joint.

    Args:
        image: the RGB image at original resolution.
        joints: (K, 2) one person's joints or (P, K, 2) several people's, in its pixels (P = 0: the image alone).
    """
    out = image.convert("RGB")  # a copy
    draw = ImageDraw.Draw(out)
    for person in np.asarray(joints, dtype=np.float64).reshape(-1, len(JOINT_NAMES), 2):  # (K, 2) each
        _draw_skeleton(draw, person, max(out.size))
    return out


def _draw_skeleton(draw: ImageDraw.ImageDraw, joints: np.ndarray, image_side: int) -> None:
    """Draw one (K, 2) skeleton; lines grow with the image's longer side."""
    width = max(2, round(image_side / 200))  # line thickness grows with the image
    radius = 1.6 * width
    finite = np.isfinite(joints).all(axis=-1)  # (K,)
    limbs = [
        (tuple(joints[a]), tuple(joints[b]), side)
        for (a, b), side in zip(SKELETON, LIMB_SIDES)
        if finite[a] and finite[b]
    ]
    for p, q, _ in limbs:  # dark outlines first, so limbs stand out on any background
        draw.line([p, q], fill=(0, 0, 0), width=width + 2 * max(1, width // 3))
    for p, q, side in limbs:
        draw.line([p, q], fill=SIDE_COLOURS[side], width=width)
    for (x, y), side, ok in zip(joints.tolist(), JOINT_SIDES, finite):
        if ok:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=SIDE_COLOURS[side], outline=(0, 0, 0))
