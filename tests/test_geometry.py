"""Tests for the affine geometry between original-image, model-input and heatmap pixels, and for image rendering."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnmrf.data.geometry import (
    affine_from_scale_offset,
    apply_affine,
    augmentation_transform,
    compose_affine,
    crop_transform,
    heatmap_to_input,
    input_to_heatmap,
    invert_affine,
    pil_affine_data,
)
from cnnmrf.data.images import decode_image, render


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """A well-conditioned random (2, 3) affine transform."""
    linear = np.eye(2) * rng.uniform(0.5, 2.0) + rng.normal(0, 0.3, size=(2, 2))
    return np.concatenate([linear, rng.normal(0, 20, size=(2, 1))], axis=1)


def blob_image(width: int, height: int, centres: list[tuple[float, float]], sigma: float = 1.2) -> Image.Image:
    """Black RGB image with a small bright Gaussian blob at each centre (integer-centre pixel convention)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width))
    for cx, cy in centres:
        img += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    grey = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


def centroid(rgb: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of an (H, W, 3) image, pixel centres at integers."""
    weight = rgb.astype(np.float64).sum(axis=-1)
    ys, xs = np.mgrid[0 : weight.shape[0], 0 : weight.shape[1]]
    total = weight.sum()
    assert total > 0, "the blob was rendered outside the output"
    return np.array([(weight * xs).sum() / total, (weight * ys).sum() / total])


# --- crop_transform -------------------------------------------------------------------------------------------------


def test_crop_transform_centres_box_and_scales_by_box_height() -> None:
    box = (10.0, 20.0, 50.0, 80.0)  # 40 x 60, centre (30, 50)
    t = crop_transform(box, input_size=64, crop_scale=3.0)
    scale = 64 / (3.0 * 60)
    np.testing.assert_allclose(t[:, :2], np.eye(2) * scale)
    np.testing.assert_allclose(apply_affine(t, [30.0, 50.0]), [31.5, 31.5])
    # The crop spans crop_scale * height = 180 px: its edges land on the outer borders of the input pixels.
    np.testing.assert_allclose(
        apply_affine(t, [[30.0 - 90, 50.0 - 90], [30.0 + 90, 50.0 + 90]]), [[-0.5, -0.5], [63.5, 63.5]]
    )


@pytest.mark.parametrize(
    ("box", "size", "crop_scale"), [((218.75, 216.8, 314.8, 360.88), 128, 3.0), ((0, 0, 20, 30), 32, 1.5)]
)
def test_crop_transform_other_boxes(box: tuple[float, ...], size: int, crop_scale: float) -> None:
    t = crop_transform(np.asarray(box), size, crop_scale)
    x1, y1, x2, y2 = box
    np.testing.assert_allclose(apply_affine(t, [(x1 + x2) / 2, (y1 + y2) / 2]), [(size - 1) / 2] * 2)
    np.testing.assert_allclose(t[0, 0], size / (crop_scale * (y2 - y1)))
    assert t[0, 1] == 0 and t[1, 0] == 0 and t[0, 0] == t[1, 1]


# --- apply / invert / compose ---------------------------------------------------------------------------------------


def test_apply_affine_matches_definition_and_keeps_batch_shape() -> None:
    t = np.array([[2.0, 0.5, 3.0], [-1.0, 1.5, -4.0]])
    np.testing.assert_allclose(apply_affine(t, [1.0, 2.0]), [2 + 1 + 3, -1 + 3 - 4])
    pts = np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2)
    out = apply_affine(t, pts)
    assert out.shape == pts.shape
    np.testing.assert_allclose(out[1, 2, 0], apply_affine(t, pts[1, 2, 0]))


def test_invert_and_compose_round_trip() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 200, size=(20, 2))
    for _ in range(5):
        a, b = random_affine(rng), random_affine(rng)
        np.testing.assert_allclose(apply_affine(invert_affine(a), apply_affine(a, pts)), pts, atol=1e-9)
        identity = np.concatenate([np.eye(2), np.zeros((2, 1))], axis=1)
        np.testing.assert_allclose(compose_affine(invert_affine(a), a), identity, atol=1e-12)
        np.testing.assert_allclose(compose_affine(a, invert_affine(a)), identity, atol=1e-12)
        # compose(second, first) applies first, then second (not the other way round).
        np.testing.assert_allclose(
            apply_affine(compose_affine(b, a), pts), apply_affine(b, apply_affine(a, pts)), atol=1e-9
        )
        assert not np.allclose(apply_affine(compose_affine(a, b), pts), apply_affine(b, apply_affine(a, pts)))


# --- augmentation_transform -----------------------------------------------------------------------------------------


def test_augmentation_identity() -> None:
    np.testing.assert_allclose(augmentation_transform(64, 1.0, 0.0, False), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_augmentation_scales_about_centre() -> None:
    t = augmentation_transform(64, 1.5, 0.0, False)
    c = 31.5
    np.testing.assert_allclose(apply_affine(t, [c, c]), [c, c])
    np.testing.assert_allclose(apply_affine(t, [c + 10, c - 4]), [c + 15, c - 6])


def test_augmentation_rotation_is_counter_clockwise_on_screen() -> None:
    c = 31.5
    t = augmentation_transform(64, 1.0, 90.0, False)
    # y points down: a point right of the centre goes up (smaller y), one above goes left.
    np.testing.assert_allclose(apply_affine(t, [c + 10, c]), [c, c - 10], atol=1e-9)
    np.testing.assert_allclose(apply_affine(t, [c, c - 10]), [c - 10, c], atol=1e-9)
    t30 = augmentation_transform(64, 2.0, 30.0, False)
    angle = np.deg2rad(30)
    np.testing.assert_allclose(apply_affine(t30, [c + 10, c]), [c + 20 * np.cos(angle), c - 20 * np.sin(angle)])


def test_augmentation_flip_mirrors_x() -> None:
    t = augmentation_transform(64, 1.0, 0.0, True)
    pts = np.array([[0.0, 5.0], [63.0, 7.0], [10.25, 40.0], [31.5, 31.5]])
    np.testing.assert_allclose(apply_affine(t, pts), np.stack([63 - pts[:, 0], pts[:, 1]], axis=1), atol=1e-12)


def test_augmentation_shift_then_flip() -> None:
    c = 31.5
    t = augmentation_transform(64, 1.0, 0.0, False, shift=(3.0, -2.0))
    np.testing.assert_allclose(apply_affine(t, [c, c]), [c + 3, c - 2])
    # The mirror comes last: the shift is mirrored too.
    tf = augmentation_transform(64, 1.0, 0.0, True, shift=(3.0, -2.0))
    np.testing.assert_allclose(apply_affine(tf, [c, c]), [63 - (c + 3), c - 2])


# --- input <-> heatmap ----------------------------------------------------------------------------------------------


def test_input_heatmap_round_trip_and_pixel_centres() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(-5, 70, size=(4, 10, 2))
    for stride in (1, 2, 4, 8):
        np.testing.assert_allclose(heatmap_to_input(input_to_heatmap(pts, stride), stride), pts, atol=1e-12)
    # Heatmap pixel 0 covers input pixels 0..3 (stride 4): its centre is input 1.5; the outer border -0.5 maps to -0.5.
    np.testing.assert_allclose(input_to_heatmap(np.array([1.5, 5.5]), 4), [0.0, 1.0])
    np.testing.assert_allclose(input_to_heatmap(np.array([-0.5, 63.5]), 4), [-0.5, 15.5])
    np.testing.assert_allclose(heatmap_to_input(np.array([0.0, 15.0]), 4), [1.5, 61.5])


# --- pil_affine_data / render ---------------------------------------------------------------------------------------


def test_pil_affine_data_identity() -> None:
    identity = affine_from_scale_offset(1.0, 0.0, 0.0)
    np.testing.assert_allclose(pil_affine_data(identity), (1, 0, 0, 0, 1, 0), atol=1e-12)
    img = blob_image(20, 20, [(7.0, 12.0)])
    np.testing.assert_array_equal(render(img, identity, 20)[:20, :20], np.asarray(img))


@pytest.mark.parametrize("point", [(12.0, 9.0), (20.0, 17.0)])
def test_render_scale_offset_lands_blob_on_transformed_point(point: tuple[float, float]) -> None:
    # A 3x upscale: getting the half-pixel convention wrong would shift the blob by a full output pixel.
    img = blob_image(32, 24, [point])
    t = affine_from_scale_offset(3.0, -20.3, -14.6)
    out = render(img, t, 64)
    np.testing.assert_allclose(centroid(out), apply_affine(t, point), atol=0.25)


def test_render_downscale_lands_blob_on_transformed_point() -> None:
    point = (61.0, 47.0)
    img = blob_image(120, 100, [point], sigma=3.0)
    t = crop_transform((45.0, 25.0, 75.0, 70.0), input_size=64, crop_scale=2.0)  # scale 64/90
    out = render(img, t, 64)
    np.testing.assert_allclose(centroid(out), apply_affine(t, point), atol=0.3)


def test_render_rotation_lands_blob_on_transformed_point() -> None:
    point = (40.0, 22.0)
    img = blob_image(64, 48, [point], sigma=1.5)
    crop = crop_transform((22.0, 14.0, 42.0, 44.0), input_size=64, crop_scale=1.5)  # scale 64/45, centre (32, 29)
    t = compose_affine(augmentation_transform(64, 1.0, 35.0, False), crop)
    out = render(img, t, 64)
    expected = apply_affine(t, point)
    np.testing.assert_allclose(centroid(out), expected, atol=0.3)
    # The rotation really moved it: without it the blob would be elsewhere.
    assert np.linalg.norm(apply_affine(crop, point) - expected) > 5


def test_render_flip_lands_blob_on_mirrored_point() -> None:
    point = (10.0, 30.0)
    img = blob_image(64, 64, [point])
    t = augmentation_transform(64, 1.0, 0.0, True)
    out = render(img, t, 64)
    np.testing.assert_allclose(centroid(out), [53.0, 30.0], atol=0.2)


def test_decode_with_draft_renders_like_full_decode() -> None:
    point = (201.0, 133.0)
    img = blob_image(320, 240, [point], sigma=3.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    full, full_factor = decode_image(data)
    small, small_factor = decode_image(data, target_scale=0.5)
    assert full_factor == 1.0 and full.size == (320, 240)
    assert small_factor == 2.0 and small.size == (160, 120)  # JPEG draft decoding at half resolution
    t = crop_transform((180.0, 100.0, 220.0, 160.0), input_size=64, crop_scale=2.0)  # scale 64/120 ~ 0.53
    expected = apply_affine(t, point)
    c_full = centroid(render(full, t, 64, full_factor))
    c_small = centroid(render(small, t, 64, small_factor))
    # Well within a pixel; tight enough to catch a dropped half-decoded-pixel offset (0.27 output px here).
    np.testing.assert_allclose(c_small, c_full, atol=0.2)
    np.testing.assert_allclose(c_small, expected, atol=0.2)
    np.testing.assert_allclose(c_full, expected, atol=0.2)


def test_decode_image_rejects_garbage_and_truncated_jpeg() -> None:
    buf = io.BytesIO()
    blob_image(64, 64, [(30.0, 30.0)]).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(b"this is not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])
