"""Tests for the heatmap codec: Gaussian encoding and (sub-pixel) peak decoding."""

from __future__ import annotations

import numpy as np
import torch

from cnnmrf.data.heatmaps import decode_heatmaps, decode_heatmaps_dark, encode_heatmaps, gaussian_blur


def test_encode_peak_is_one_at_integer_joint() -> None:
    joints = np.array([[5.0, 7.0], [0.0, 0.0], [15.0, 3.0]])
    maps = encode_heatmaps(joints, np.ones(3, bool), (12, 16), sigma=1.5)
    assert maps.shape == (3, 12, 16) and maps.dtype == np.float32
    for k, (x, y) in enumerate(joints.astype(int)):
        assert maps[k, y, x] == 1.0
        assert np.unravel_index(maps[k].argmax(), maps[k].shape) == (y, x)
    # Gaussian profile: one pixel away the value is exp(-1 / (2 sigma^2)).
    np.testing.assert_allclose(maps[0, 7, 6], np.exp(-1 / (2 * 1.5**2)), rtol=1e-6)
    np.testing.assert_allclose(maps[0, 9, 5], np.exp(-4 / (2 * 1.5**2)), rtol=1e-6)
    assert maps.min() >= 0 and maps.max() <= 1


def test_encode_invisible_joints_are_zero() -> None:
    joints = np.array([[5.0, 7.0], [6.0, 6.0]])
    maps = encode_heatmaps(joints, np.array([True, False]), (16, 16), sigma=1.0)
    assert maps[0].max() == 1.0
    assert not maps[1].any()


def test_encode_batch_dims() -> None:
    rng = np.random.default_rng(0)
    joints = rng.uniform(2, 13, size=(2, 3, 10, 2))
    visible = rng.random((2, 3, 10)) > 0.3
    maps = encode_heatmaps(joints, visible, (16, 20), sigma=1.5)
    assert maps.shape == (2, 3, 10, 16, 20)
    # Each map equals the one encoded on its own.
    single = encode_heatmaps(joints[1, 2], visible[1, 2], (16, 20), sigma=1.5)
    np.testing.assert_array_equal(maps[1, 2], single)
    assert (maps.reshape(2, 3, 10, -1).max(axis=-1) > 0.5).tolist() == visible.tolist()


def test_decode_recovers_subpixel_positions() -> None:
    rng = np.random.default_rng(1)
    joints = rng.uniform(3, 12, size=(4, 10, 2))  # away from the 16x16 borders
    maps = encode_heatmaps(joints, np.ones((4, 10), bool), (16, 16), sigma=1.5)
    coords, scores = decode_heatmaps(torch.from_numpy(maps), refine=True)
    assert coords.shape == (4, 10, 2) and scores.shape == (4, 10)
    assert np.abs(coords.numpy() - joints).max() < 0.05
    # Scores are the map values at the integer peak: close to 1 for a sampled Gaussian.
    np.testing.assert_allclose(scores.numpy(), maps.reshape(4, 10, -1).max(axis=-1))
    assert scores.min() > 0.8


def test_decode_without_refine_returns_integer_argmax() -> None:
    rng = np.random.default_rng(2)
    joints = rng.uniform(3, 12, size=(10, 2))
    maps = encode_heatmaps(joints, np.ones(10, bool), (16, 16), sigma=1.5)
    coords, _ = decode_heatmaps(torch.from_numpy(maps), refine=False)
    np.testing.assert_array_equal(coords.numpy(), np.round(joints))
    assert torch.equal(coords, coords.round())


def test_decode_handles_x_and_y_independently_and_non_square_maps() -> None:
    joints = np.array([[[17.3, 4.8]]])  # (1, 1, 2) on a 10 x 24 map
    maps = torch.from_numpy(encode_heatmaps(joints, np.ones((1, 1), bool), (10, 24), sigma=2.0))
    coords, _ = decode_heatmaps(maps)
    np.testing.assert_allclose(coords.numpy(), joints, atol=0.05)


def test_decode_border_peaks_do_not_crash() -> None:
    joints = np.array([[0.0, 0.0], [15.0, 15.0], [0.0, 9.4], [15.0, 2.0], [-3.0, 20.0]])
    maps = encode_heatmaps(joints, np.ones(5, bool), (16, 16), sigma=1.0)
    coords, scores = decode_heatmaps(torch.from_numpy(maps))
    c = coords.numpy()
    assert np.isfinite(c).all() and ((c >= -0.5) & (c <= 15.5)).all()
    np.testing.assert_allclose(c[:2], joints[:2], atol=1e-6)  # exact corners: no offset at the border
    np.testing.assert_allclose(c[2], [0.0, 9.4], atol=0.06)  # still refined along the free axis
    np.testing.assert_allclose(c[4], [0.0, 15.0], atol=1e-6)  # outside the map: clamped to the nearest corner
    assert scores.shape == (5,)


def test_decode_flat_and_negative_maps() -> None:
    flat = torch.zeros(2, 3, 8, 8)
    coords, scores = decode_heatmaps(flat)
    assert torch.isfinite(coords).all() and torch.equal(scores, torch.zeros(2, 3))
    logits = torch.from_numpy(np.log(encode_heatmaps(np.array([[4.3, 5.6]]), np.ones(1, bool), (12, 12), 1.5) + 1e-6))
    coords, scores = decode_heatmaps(logits)  # log-beliefs are negative: the peak is still found and refined
    np.testing.assert_allclose(coords.numpy(), [[4.3, 5.6]], atol=0.05)
    assert scores.item() < 0.1


def test_gaussian_blur_keeps_mass_and_spreads_a_spike() -> None:
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(spike, 1.5)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5  # away from the edges the kernel sums to 1
    assert float(blurred[0, 0, 7, 7]) < 0.1 and float(blurred[0, 0, 7, 9]) > 0.01
    torch.testing.assert_close(blurred, blurred.transpose(-2, -1))  # isotropic
    assert gaussian_blur(spike, 0.0) is spike


def test_dark_recovers_subpixel_centres_of_target_shaped_maps() -> None:
    """Log of an encoder target is the map a spatial-softmax model is trained towards; DARK finds its centre."""
    joints = np.array([[[10.3, 7.8], [4.0, 12.45], [15.6, 3.2]]])  # (1, K=3, 2)
    maps = encode_heatmaps(joints, np.ones((1, 3), bool), (20, 24), sigma=1.5)  # (1, 3, 20, 24)
    log_maps = torch.log(torch.from_numpy(maps).clamp_min(1e-30))
    coords, scores = decode_heatmaps_dark(log_maps, sigma=1.5)
    np.testing.assert_allclose(coords.numpy(), joints, atol=0.05)
    torch.testing.assert_close(scores, log_maps.amax(dim=(-2, -1)))


def test_dark_uses_the_hessian_cross_term() -> None:
    """An elongated, rotated Gaussian: a per-axis parabola is biased, the 2-D Newton step is not."""
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    cx, cy = 10.4, 9.7
    u, v = (xs - cx + ys - cy) / 2**0.5, (xs - cx - ys + cy) / 2**0.5  # axes at 45 degrees
    log_map = -(u**2) / (2 * 3.0**2) - v**2 / (2 * 0.8**2)
    coords, _ = decode_heatmaps_dark(log_map[None, None], sigma=0.0)
    assert torch.allclose(coords[0, 0], torch.tensor([cx, cy]), atol=0.03)
    parabola, _ = decode_heatmaps(log_map[None, None])
    assert (parabola[0, 0] - torch.tensor([cx, cy])).abs().max() > 0.05


def test_dark_on_flat_maps_keeps_the_integer_peak() -> None:
    coords, _ = decode_heatmaps_dark(torch.zeros(2, 4, 8, 8), sigma=1.0)
    assert torch.isfinite(coords).all()
    assert torch.equal(coords, coords.round())
