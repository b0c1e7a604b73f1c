"""Decode images and render them through an affine transform into the model's input frame.

Greyscale images wider than 8 bits are brought to 8 bits by their bit depth, as viewers show them
(:func:`eight_bit`): 16-bit integers (PNG, TIFF) by their full range, 0-65535; 32-bit integers (TIFF; they have no
agreed white level: cameras and tools store 12- to 16-bit counts in them) by the picture's own range, its smallest
value black and its largest white; floats as 0 = black and 1 = white when every value lies in [0, 1], otherwise by
their own range too (NaN as black, infinities as the range's ends).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnmrf.data.geometry import affine_from_scale_offset, compose_affine, pil_affine_data

# Refuse images whose decoded size would exceed this many pixels (decompression bombs, absurd inputs).
MAX_PIXELS = 80_000_000
# Refuse images with a side shorter than this (no person can be seen in fewer pixels, and the person search would
# have to enlarge them hundreds of times) ...
MIN_SIDE = 16
# ... or whose long side is more than this many times the short one (strips, not photos: the search, which sizes
# torsos by the image height, would scan a huge image).
MAX_ASPECT = 20.0
SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def size_problem(width: int, height: int) -> str:
    """Why an image of ``width`` x ``height`` pixels is refused (:data:`MAX_PIXELS`, :data:`MIN_SIDE`,
    :data:`MAX_ASPECT`), or ``""`` if it is not. Read from the header, before anything is decoded."""
    if width * height > MAX_PIXELS:
        return f"image is {width}x{height}, larger than the {MAX_PIXELS} pixel limit"
    if min(width, height) < MIN_SIDE:
        return f"image is {width}x{height}: a side shorter than {MIN_SIDE} pixels is too small to show a person"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"image is {width}x{height}: sides more than {MAX_ASPECT:g} to 1 make a strip, not a photo the person "
            "search can scan"
        )
    return ""


def eight_bit(image: Image.Image, png: bool = False) -> Image.Image:
    """``image`` with greyscale samples wider than 8 bits (modes ``I;16*``, ``I``, ``F``) scaled to an 8-bit ``L``
    image as the module docstring says; other images are returned as they are.

    Args:
        image: the decoded image.
        png: it was a PNG, whose samples have at most 16 bits: mode ``I`` (in which older Pillow versions open
            16-bit greyscale PNGs) is then 16-bit too.
    """
    if image.mode not in SIXTEEN_BIT_MODES and image.mode not in ("I", "F"):
        return image
    values = np.asarray(image).astype(np.float32)  # (H, W), native byte order
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and png):
        low, high = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255.0 / max(high - low, 1e-30))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def decode_image(data: bytes, target_scale: float = 1.0, exif_orientation: bool = False) -> tuple[Image.Image, float]:
    """Decode image bytes to RGB, letting JPEG decoding shrink by a power of two when ``target_scale`` < 1.

    The size is checked from the header first (:func:`size_problem`). Greyscale wider than 8 bits is scaled by its
    bit depth (see the module docstring). With ``exif_orientation`` the image is turned upright as its EXIF
    orientation tag says (as photo viewers show it); FLIC frames carry no such tag, and preprocessing leaves it off so
    pixels match the annotations.

    Returns:
        The RGB image and the factor ``f`` such that original pixel sizes are ``f`` decoded pixels wide.
    Raises:
        ValueError: the bytes are not a readable image, or its size is refused (absurdly large, tiny or elongated).
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        problem = size_problem(width, height)
        if problem:
            raise ValueError(problem)
        if image.format == "JPEG" and target_scale < 1.0:
            image.draft("RGB", (max(1, int(width * target_scale)), max(1, int(height * target_scale))))
        image.load()  # the full decode: truncated files fail here
        factor = width / image.size[0]  # draft decoding shrinks both axes alike
        png = image.format == "PNG"
        if exif_orientation:  # before eight_bit, whose new image has no EXIF
            image = ImageOps.exif_transpose(image)
        image = eight_bit(image, png).convert("RGB")
    except UnidentifiedImageError as err:
        raise ValueError("not a readable image (unknown format)") from err
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"not a readable image ({err})") from err
    return image, factor


def render(image: Image.Image, transform: np.ndarray, size: int, decode_factor: float = 1.0) -> np.ndarray:
    """Render ``image`` through ``transform`` (original pixels -> output pixels) into a (size, size, 3) uint8 array.

    Args:
        image: RGB image, possibly decoded at reduced resolution.
        transform: (2, 3) affine matrix from original-image pixels to output pixels.
        size: output side in pixels.
        decode_factor: original pixels per decoded pixel (from :func:`decode_image`).
    """
    # decoded (integer-centre) -> original: orig = f * dec + (f - 1) / 2
    f = decode_factor
    decoded_to_out = compose_affine(transform, affine_from_scale_offset(f, 0.5 * f - 0.5, 0.5 * f - 0.5))
    out = image.transform((size, size), Image.AFFINE, pil_affine_data(decoded_to_out), resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8)
