"""Decode images and render them through an affine transform into the model's input frame."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnmrf.data.geometry import affine_from_scale_offset, compose_affine, pil_affine_data

# Refuse images whose decoded size would exceed this many pixels (decompression bombs, absurd inputs).
MAX_PIXELS = 80_000_000


def decode_image(data: bytes, target_scale: float = 1.0, exif_orientation: bool = False) -> tuple[Image.Image, float]:
    """Decode image bytes to RGB, letting JPEG decoding shrink by a power of two when ``target_scale`` < 1.

    With ``exif_orientation`` the image is turned upright as its EXIF orientation tag says (as photo viewers show it);
    FLIC frames carry no such tag, and preprocessing leaves it off so pixels match the annotations.

    Returns:
        The RGB image and the factor ``f`` such that original pixel sizes are ``f`` decoded pixels wide.
    Raises:
        ValueError: the bytes are not a readable image, or it is absurdly large.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"image is {width}x{height}, larger than the {MAX_PIXELS} pixel limit")
        if image.format == "JPEG" and target_scale < 1.0:
            image.draft("RGB", (max(1, int(width * target_scale)), max(1, int(height * target_scale))))
        image = image.convert("RGB")  # forces the full decode: truncated files fail here
        factor = width / image.size[0]  # draft decoding shrinks both axes alike
        if exif_orientation:
            image = ImageOps.exif_transpose(image)
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
