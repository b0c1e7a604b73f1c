"""Tests of the MRF spatial model (cnnmrf.models.spatial)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnmrf.models.spatial import (
    SpatialConfig,
    SpatialModel,
    displacement_histograms,
    fast_fft_size,
    inverse_softplus,
    spatial_forward_direct,
)

SIZES = [(7, 9), (8, 6)]


def _random_model(k: int, size: tuple[int, int], seed: int = 0) -> SpatialModel:
    model = SpatialModel(SpatialConfig(num_joints=k, heatmap_size=size))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.pair_kernels.copy_(torch.randn(model.pair_kernels.shape, generator=gen) * 2 - 3)
        model.pair_bias.copy_(torch.randn(model.pair_bias.shape, generator=gen) - 4)
    return model


@pytest.mark.parametrize("size", SIZES)
def test_output_shape_finite(size: tuple[int, int]) -> None:
    model = _random_model(4, size)
    out = model(torch.randn(2, 4, *size))
    assert out.shape == (2, 4, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_default_config_shape() -> None:
    config = SpatialConfig()
    model = SpatialModel(config)
    x = torch.randn(1, config.num_joints, *config.heatmap_size) * 5
    out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", SIZES)
def test_fft_matches_direct_float64(size: tuple[int, int]) -> None:
    model = _random_model(4, size, seed=1)
    x = torch.randn(3, 4, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    fft = model(x)
    ref = spatial_forward_direct(model, x)
    assert fft.dtype == torch.float64
    rel = (fft - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-6, rel


def test_fft_matches_direct_float32_loosely() -> None:
    model = _random_model(3, (7, 9), seed=3)
    x = torch.randn(2, 3, 7, 9)
    rel = (model(x) - spatial_forward_direct(model, x)).abs().max() / spatial_forward_direct(model, x).abs().max()
    assert rel <= 1e-4, rel


def test_gradients_reach_parameters_and_input() -> None:
    model = _random_model(4, (7, 9), seed=4)
    x = torch.randn(2, 4, 7, 9, requires_grad=True)
    (model(x) * torch.randn(2, 4, 7, 9)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cached_spectra_match_a_fresh_computation_and_follow_in_place_changes() -> None:
    model = _random_model(4, (7, 9), seed=5)
    x = torch.randn(2, 4, 7, 9, generator=torch.Generator().manual_seed(6))

    def fresh() -> torch.Tensor:
        with torch.enable_grad():  # with gradients nothing is cached: the kernels' spectra are computed anew
            return model(x).detach()

    with torch.no_grad():
        first = model(x)
        spectra = model.pair_spectra(torch.float32)
        assert model.pair_spectra(torch.float32)[0] is spectra[0]  # inference reuses them
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)
        torch.testing.assert_close(first, fresh())
        double = model(x.double())  # another dtype: its own spectra
        assert double.dtype == torch.float64
        torch.testing.assert_close(double, spatial_forward_direct(model, x.double()), rtol=1e-6, atol=1e-8)

        model.pair_bias.add_(1.0)  # in place, as an optimizer step does
        after_bias = model(x)
        assert not torch.allclose(after_bias, first, atol=1e-3)
        torch.testing.assert_close(after_bias, fresh())

        model.pair_kernels[1, 0] += 2.0
        after_kernel = model(x)
        assert not torch.allclose(after_kernel, after_bias, atol=1e-3)
        torch.testing.assert_close(after_kernel, fresh())
        torch.testing.assert_close(model(x.double()), spatial_forward_direct(model, x.double()), rtol=1e-6, atol=1e-8)

        other = _random_model(4, (7, 9), seed=7)
        model.load_state_dict(other.state_dict())  # copies the parameters in place
        torch.testing.assert_close(model(x), other(x))


def test_displacement_histograms_hand_made() -> None:
    height, width = 6, 7
    joints0 = np.array([[1.0, 3.0], [2.2, 4.1], [3.0, 2.0]])  # (x, y)
    joints = np.zeros((4, 3, 2))
    joints[:3, 0] = joints0
    joints[:3, 1] = joints0 + [2.0, -1.0]  # joint 1 at +2 px x, -1 px y from joint 0
    joints[:3, 2] = np.nan  # joint 2 never visible
    joints[3] = [[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]]  # example with joint 1 invisible
    visible = np.array([[True, True, False]] * 3 + [[True, False, True]])
    hist = displacement_histograms(joints, visible, (height, width), sigma=0.0)
    assert hist.shape == (3, 3, 2 * height - 1, 2 * width - 1)
    assert hist.dtype == np.float32
    cy, cx = height - 1, width - 1
    assert hist[1, 0, cy - 1, cx + 2] == pytest.approx(1.0)
    assert hist[1, 0].sum() == pytest.approx(1.0)
    assert hist[0, 1, cy + 1, cx - 2] == pytest.approx(1.0)
    assert hist[0, 1].sum() == pytest.approx(1.0)
    # Only example 3 sees joints 0 and 2 together: joint 2 at (+1, +1) from joint 0.
    assert hist[2, 0, cy + 1, cx + 1] == pytest.approx(1.0)
    assert hist[1, 2].sum() == 0 and hist[2, 1].sum() == 0
    for i in range(3):
        assert hist[i, i].sum() == 0


def test_displacement_histograms_smoothed_normalised() -> None:
    rng = np.random.default_rng(0)
    joints = rng.uniform(0, 8, size=(20, 3, 2))
    visible = rng.uniform(size=(20, 3)) > 0.2
    hist = displacement_histograms(joints, visible, (8, 8), sigma=1.0)
    sums = hist.sum(axis=(2, 3))
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(sums[off], 1.0, rtol=1e-5)
    assert (hist >= 0).all()


def test_init_from_histogram_proportional() -> None:
    size = (6, 7)
    model = SpatialModel(SpatialConfig(num_joints=3, heatmap_size=size, kernel_floor=1e-9))
    rng = np.random.default_rng(1)
    joints = rng.uniform(0, 6, size=(30, 3, 2))
    hist = displacement_histograms(joints, np.ones((30, 3), dtype=bool), size, sigma=1.0)
    model.init_from_histogram(hist)
    kern = torch.nn.functional.softplus(model.pair_kernels.detach().double()).numpy()
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            big = hist[i, j] > 1e-3 * hist[i, j].max()
            np.testing.assert_allclose(kern[i, j][big], hist[i, j][big], rtol=1e-3)
            assert np.argmax(kern[i, j]) == np.argmax(hist[i, j])
    bias = torch.nn.functional.softplus(model.pair_bias.detach().double())
    torch.testing.assert_close(bias, torch.full_like(bias, model.config.bias_init), rtol=1e-4, atol=0)
    # Model still matches the direct reference after the histogram initialisation.
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    rel = (model(x) - spatial_forward_direct(model, x)).abs().max() / spatial_forward_direct(model, x).abs().max()
    assert rel <= 1e-6


def test_prior_disambiguates_peaks() -> None:
    height, width = 9, 11
    dx, dy = 3, -2  # joint 1 lies at +3 px x, -2 px y from joint 0
    joints = np.zeros((5, 2, 2))
    joints[:, 0] = [[4.0, 5.0], [5.0, 6.0], [3.0, 4.0], [6.0, 5.0], [4.0, 7.0]]
    joints[:, 1] = joints[:, 0] + [dx, dy]
    config = SpatialConfig(num_joints=2, heatmap_size=(height, width), histogram_sigma=0.7)
    hist = displacement_histograms(joints, np.ones((5, 2), dtype=bool), (height, width), config.histogram_sigma)
    model = SpatialModel(config)
    model.init_from_histogram(hist)

    x = torch.full((1, 2, height, width), -4.0)
    x[0, 0, 5, 3] = 4.0  # clear joint 0 at (y=5, x=3)
    good, bad = (5 + dy, 3 + dx), (1, 1)  # joint 1: two equal peaks (`bad` first in raster order), only `good` fits
    x[0, 1][good] = 2.0
    x[0, 1][bad] = 2.0
    with torch.no_grad():
        out = model(x)
    flat = int(out[0, 1].argmax())
    assert divmod(flat, width) == good
    assert out[0, 1][good] > out[0, 1][bad] + 1.0
    # Joint 0's own peak is kept.
    assert divmod(int(out[0, 0].argmax()), width) == (5, 3)


def test_helpers() -> None:
    assert fast_fft_size(119) == 120
    assert fast_fft_size(179) == 180
    assert fast_fft_size(13) == 15
    assert fast_fft_size(1) == 1
    y = torch.tensor([1e-8, 1e-3, 0.5, 3.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.softplus(inverse_softplus(y)), y)


def test_bad_input_shape_raises() -> None:
    model = SpatialModel(SpatialConfig(num_joints=3, heatmap_size=(5, 5)))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 5, 6))
    with pytest.raises(ValueError):
        model.init_from_histogram(np.zeros((3, 3, 9, 10)))
