"""Tests for inference: mapping back to original pixels, flip testing, multi-scale testing and dataset prediction."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from cnnmrf.data.geometry import (
    apply_affine,
    augmentation_transform,
    crop_transform,
    heatmap_to_input,
    input_to_heatmap,
    invert_affine,
    pil_affine_data,
)
from cnnmrf.data.heatmaps import Decoder, Decoding, decode_heatmaps, encode_heatmaps
from cnnmrf.inference.config import InferenceConfig
from cnnmrf.inference.crops import (
    DETECTOR,
    SPATIAL,
    decode_to_original,
    final_joints,
    heatmap_to_original,
    predict_crops,
    predict_heatmap_sets,
    predict_rows,
    unzoom_heatmaps,
    zoom_images,
)
from cnnmrf.joints import FLIP_PERMUTATION
from tests.fixtures import tiny_model

PERM = list(FLIP_PERMUTATION)


def test_heatmap_to_original_inverts_the_crop_transform_exactly() -> None:
    rng = np.random.default_rng(0)
    boxes = [(40.0, 30.0, 60.0, 60.0), (100.5, 20.25, 131.0, 66.0), (-5.0, 10.0, 15.0, 40.0)]
    transforms = np.stack([crop_transform(b, 64, 3.0) for b in boxes])  # (3, 2, 3)
    original = rng.uniform(-20, 180, size=(3, 10, 2))
    heatmap = np.stack([input_to_heatmap(apply_affine(t, p), 4) for t, p in zip(transforms, original)])
    np.testing.assert_allclose(heatmap_to_original(heatmap, transforms, 4), original, atol=1e-9)


def test_decoded_peaks_map_back_to_known_original_points() -> None:
    transforms = np.stack([crop_transform((50.0, 40.0, 70.0, 70.0), 64, 3.0)] * 2)  # (2, 2, 3)
    heat = np.array([[[3.0, 4.0], [10.0, 12.0]], [[7.0, 7.0], [0.0, 15.0]]])  # (2, 2, 2) integer heatmap pixels
    maps = torch.from_numpy(encode_heatmaps(heat, np.ones((2, 2), bool), (16, 16), sigma=1.5))  # (2, 2, 16, 16)
    joints, scores, mass = decode_to_original(maps, transforms, stride=4, decoder=Decoder(Decoding.parabola))
    expected = np.stack([apply_affine(invert_affine(t), heatmap_to_input(h, 4)) for t, h in zip(transforms, heat)])
    np.testing.assert_allclose(joints, expected, atol=1e-6)
    np.testing.assert_allclose(scores, 1.0)
    flat = maps.flatten(-2).double()  # (2, 2, 256): the peak's log-softmax
    np.testing.assert_allclose(mass, (flat.amax(-1) - torch.logsumexp(flat, -1)).numpy(), atol=1e-5)
    assert (mass < 0).all()
    # A joint of the crop centre lands on the torso-box centre.
    centre = np.full((1, 1, 2), (16 - 1) / 2)
    np.testing.assert_allclose(heatmap_to_original(centre, transforms[:1], 4)[0, 0], [60.0, 55.0], atol=1e-9)


def test_flip_test_of_a_symmetric_input_is_mirror_symmetric() -> None:
    model = tiny_model()
    x = torch.rand(2, 3, 64, 64)
    x = 0.5 * (x + x.flip(-1))  # left-right symmetric crops
    maps = predict_heatmap_sets(model, x, InferenceConfig(flip_test=True))
    assert set(maps) == {DETECTOR, SPATIAL}
    for m in maps.values():  # (2, K, 16, 16)
        torch.testing.assert_close(m.flip(-1)[:, PERM], m, atol=1e-5, rtol=1e-5)


def test_flip_test_is_equivariant_to_mirroring() -> None:
    model = tiny_model(seed=1)
    x = torch.rand(2, 3, 64, 64)
    plain = predict_heatmap_sets(model, x, InferenceConfig(flip_test=True))[SPATIAL]  # (2, K, 16, 16)
    mirrored = predict_heatmap_sets(model, x.flip(-1), InferenceConfig(flip_test=True))[SPATIAL]
    torch.testing.assert_close(mirrored, plain.flip(-1)[:, PERM], atol=1e-5, rtol=1e-5)
    # Decoded joints: joint k in the mirrored crop is joint perm[k] of the original crop, mirrored.
    c1, _ = decode_heatmaps(plain, refine=True)
    c2, _ = decode_heatmaps(mirrored, refine=True)
    assert torch.allclose(c2[..., 0], 15 - c1[:, PERM, 0], atol=1e-3)


def test_single_scale_equals_plain_forward() -> None:
    model = tiny_model()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    maps = predict_heatmap_sets(
        model, x, InferenceConfig(scales=(1.0,))
    )  # runs the convolutions channels-last: equal up to round-off
    for name in (DETECTOR, SPATIAL):
        assert torch.allclose(maps[name], out[name], atol=1e-5, rtol=1e-5)
    flipped = predict_heatmap_sets(model, x, InferenceConfig(flip_test=True, scales=(1.0,)))
    with torch.no_grad():
        mirror = model(x.flip(-1))["spatial"].flip(-1)[:, PERM]
    assert torch.allclose(flipped[SPATIAL], 0.5 * (out["spatial"] + mirror), atol=1e-5, rtol=1e-5)
    detector_only = predict_heatmap_sets(model, x, InferenceConfig(use_spatial=False))
    assert set(detector_only) == {DETECTOR}
    assert torch.allclose(detector_only[DETECTOR], out["detector"], atol=1e-5)


def test_zoom_matches_augmentation_transform() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    transform = augmentation_transform(64, scale=0.8, rotation_deg=0.0, flip=False)
    expected = (
        np.asarray(
            Image.fromarray(image).transform(
                (64, 64), Image.AFFINE, pil_affine_data(transform), resample=Image.BILINEAR
            ),
            dtype=np.float32,
        )
        / 255.0
    )
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    zoomed = zoom_images(x, 0.8)[0].permute(1, 2, 0).numpy()
    inner = slice(10, 54)  # away from the black border, where both samplers agree up to rounding
    np.testing.assert_allclose(zoomed[inner, inner], expected[inner, inner], atol=2.5 / 255)


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_unzoom_maps_a_zoomed_peak_back_to_its_reference_position(scale: float) -> None:
    ref = np.array([[6.0, 9.0], [9.5, 5.0]])  # reference heatmap pixels (x, y)
    c = (16 - 1) / 2
    zoomed_pos = c + scale * (ref - c)  # where the zoomed crop puts them
    maps = torch.from_numpy(encode_heatmaps(zoomed_pos[None], np.ones((1, 2), bool), (16, 16), sigma=2.0))
    warped, weight = unzoom_heatmaps(maps, scale)
    coords, _ = decode_heatmaps(warped / weight.clamp_min(1e-6), refine=True)
    np.testing.assert_allclose(coords[0].numpy(), ref, atol=0.35)
    assert weight.shape == (1, 1, 16, 16) and float(weight.max()) <= 1.0 + 1e-6
    assert (float(weight.min()) < 0.5) == (scale > 1)  # a zoom-in does not see the reference frame's border


def test_multi_scale_runs_and_covers_every_pixel() -> None:
    model = tiny_model()
    x = torch.rand(2, 3, 64, 64)
    for scales in ((1.0, 0.8, 1.2), (1.2, 1.4)):
        maps = predict_heatmap_sets(model, x, InferenceConfig(flip_test=True, scales=scales))
        for m in maps.values():
            assert m.shape == (2, 10, 16, 16) and torch.isfinite(m).all()


def test_predict_rows_gives_the_same_joints_in_any_row_order(tiny_h5: Path) -> None:
    model = tiny_model()
    with h5py.File(tiny_h5, "r") as h5:
        n = h5["train"]["images"].shape[0]
    rows = np.array([5, 0, 3, 3, 7])
    joints, scores, mass = final_joints(predict_rows(model, tiny_h5, "train", rows, batch_size=2, device="cpu"))
    assert joints.shape == (5, 10, 2) and scores.shape == (5, 10) and mass.shape == (5, 10)
    sets = predict_rows(model, tiny_h5, "train", np.arange(n), batch_size=64, config=InferenceConfig(use_spatial=True))
    np.testing.assert_allclose(joints, sets[SPATIAL].joints[rows], atol=1e-4)
    np.testing.assert_array_equal(joints[2], joints[3])  # a repeated row gives the same prediction
    detector_only = predict_rows(model, tiny_h5, "train", rows, config=InferenceConfig(use_spatial=False))
    assert set(detector_only) == {DETECTOR}
    np.testing.assert_allclose(detector_only[DETECTOR].joints, sets[DETECTOR].joints[rows], atol=1e-4)


def test_inference_config_defaults_and_scales() -> None:
    config = InferenceConfig()
    assert (config.use_spatial, config.flip_test, config.scales, config.dtype) == (True, False, (1.0,), torch.float32)
    assert config.decoder == Decoder()  # DARK with the default targets' sigma
    assert InferenceConfig(scales=[1, 0.8]).scales == (1.0, 0.8)  # a list becomes a tuple of floats
    with pytest.raises(AttributeError):
        config.flip_test = True  # type: ignore[misc]  # frozen: one config is shared by every batch


def test_predict_crops_follows_its_config(tiny_h5: Path) -> None:
    model = tiny_model()
    with h5py.File(tiny_h5, "r") as h5:
        crops, transforms = h5["train"]["images"][:2], h5["train"]["transform"][:2]
    plain = predict_crops(model, crops, transforms)
    assert set(plain) == {DETECTOR, SPATIAL}
    alone = predict_crops(model, crops, transforms, config=InferenceConfig(use_spatial=False))
    assert set(alone) == {DETECTOR}
    np.testing.assert_array_equal(alone[DETECTOR].joints, plain[DETECTOR].joints)
    argmax = predict_crops(model, crops, transforms, config=InferenceConfig(decoder=Decoder(Decoding.argmax)))
    cells = np.stack([input_to_heatmap(apply_affine(t, j), 4) for t, j in zip(transforms, argmax[SPATIAL].joints)])
    np.testing.assert_allclose(cells, np.round(cells), atol=1e-6)  # argmax: whole heatmap cells
    assert not np.array_equal(argmax[SPATIAL].joints, plain[SPATIAL].joints)
