"""Tests for the heatmap losses on hand-computed values, their masking, gradients, and peak normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from cnnmrf.losses import LOSSES, heatmap_mse, peak_normalised, spatial_softmax_cross_entropy


def maps(*values: list[list[float]]) -> torch.Tensor:
    """(1, K, H, W) tensor from K nested lists."""
    return torch.tensor([values], dtype=torch.float32)


def test_registry() -> None:
    assert LOSSES == {"mse": heatmap_mse, "ce": spatial_softmax_cross_entropy}


def test_mse_known_value() -> None:
    pred = maps([[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]])
    target = torch.zeros_like(pred)
    # map 0: (1 + 4 + 9 + 16) / 4 = 7.5; map 1: 0; mean over maps = 3.75
    assert heatmap_mse(pred, target).item() == pytest.approx(3.75)
    target[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # map 0 now wrong only by 2 at one pixel: 4 / 4 = 1
    assert heatmap_mse(pred, target).item() == pytest.approx(0.5)


def test_mse_mask_excludes_maps() -> None:
    pred = maps([[1.0, 2.0], [3.0, 4.0]], [[10.0, 10.0], [10.0, 10.0]])
    target = torch.zeros_like(pred)
    assert heatmap_mse(pred, target, torch.tensor([[True, False]])).item() == pytest.approx(7.5)
    assert heatmap_mse(pred, target, torch.tensor([[False, True]])).item() == pytest.approx(100.0)
    assert heatmap_mse(pred, target, torch.tensor([[False, False]])).item() == 0.0  # nothing counts: 0, not NaN


def test_mse_averages_over_batch_and_joints() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    pred[1, 2] = 2.0  # one map of six has error 4 everywhere
    assert heatmap_mse(pred, torch.zeros_like(pred)).item() == pytest.approx(4.0 / 6)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[1, 2] = mask[0, 0] = True
    assert heatmap_mse(pred, torch.zeros_like(pred), mask).item() == pytest.approx(2.0)


def test_ce_uniform_logits_one_hot_target_is_log_n() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = maps([[0.0, 0.0], [0.0, 1.0]])
    assert spatial_softmax_cross_entropy(logits, target).item() == pytest.approx(math.log(4))
    # The target is normalised to sum 1: scaling it changes nothing.
    assert spatial_softmax_cross_entropy(logits, 7.0 * target).item() == pytest.approx(math.log(4))


def test_ce_known_value() -> None:
    logits = torch.log(maps([[1.0, 1.0], [1.0, 5.0]]))  # softmax: 1/8, 1/8, 1/8, 5/8
    one_hot = maps([[0.0, 0.0], [0.0, 1.0]])
    assert spatial_softmax_cross_entropy(logits, one_hot).item() == pytest.approx(-math.log(5 / 8), rel=1e-6)
    split = maps([[1.0, 0.0], [0.0, 1.0]])  # half the mass on a 1/8 pixel, half on the 5/8 one
    expected = -(0.5 * math.log(1 / 8) + 0.5 * math.log(5 / 8))
    assert spatial_softmax_cross_entropy(logits, split).item() == pytest.approx(expected, rel=1e-6)
    # Adding a constant to the logits does not change the softmax.
    assert spatial_softmax_cross_entropy(logits + 100.0, split).item() == pytest.approx(expected, rel=1e-5)


def test_ce_masked_and_empty_maps_are_excluded() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, 0] = 50.0  # map 1 is confident and right: loss ~0
    target = torch.zeros(1, 3, 2, 2)
    target[0, 0, 1, 1] = 1.0
    target[0, 1, 0, 0] = 1.0
    # map 2's target is all zero (joint not visible): left out even without a mask.
    assert spatial_softmax_cross_entropy(logits, target).item() == pytest.approx(math.log(4) / 2, rel=1e-5)
    mask = torch.tensor([[True, False, True]])
    assert spatial_softmax_cross_entropy(logits, target, mask).item() == pytest.approx(math.log(4), rel=1e-6)
    mask = torch.tensor([[False, True, True]])
    assert spatial_softmax_cross_entropy(logits, target, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_all_targets_empty_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = spatial_softmax_cross_entropy(logits, torch.zeros(2, 3, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ce_low_precision_logits_are_computed_in_float32() -> None:
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    loss = spatial_softmax_cross_entropy(logits, maps([[0.0, 0.0], [0.0, 1.0]]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_ce_gradient_direction() -> None:
    logits = torch.zeros(1, 1, 3, 3, requires_grad=True)
    target = torch.zeros(1, 1, 3, 3)
    target[0, 0, 1, 2] = 1.0
    loss = spatial_softmax_cross_entropy(logits, target)
    loss.backward()
    grad = logits.grad[0, 0]
    # d/dz = softmax - target: -8/9 at the target pixel, +1/9 elsewhere.
    assert grad[1, 2].item() == pytest.approx(1 / 9 - 1)
    others = torch.ones(3, 3, dtype=torch.bool)
    others[1, 2] = False
    torch.testing.assert_close(grad[others], torch.full((8,), 1 / 9))
    # A small step against the gradient lowers the loss.
    with torch.no_grad():
        after = spatial_softmax_cross_entropy(logits - 0.5 * logits.grad, target)
    assert after.item() < loss.item()


def test_ce_masked_map_gets_no_gradient() -> None:
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.rand(1, 2, 4, 4)
    spatial_softmax_cross_entropy(logits, target, torch.tensor([[True, False]])).backward()
    assert logits.grad[0, 0].abs().sum() > 0
    assert torch.equal(logits.grad[0, 1], torch.zeros(4, 4))


def test_mse_gradient_direction() -> None:
    pred = maps([[0.5, -1.0], [2.0, 0.0]]).requires_grad_(True)
    target = maps([[1.0, -1.0], [0.0, 0.0]])
    loss = heatmap_mse(pred, target)
    loss.backward()
    # d/dpred = 2 (pred - target) / (H W) / (maps counted)
    torch.testing.assert_close(pred.grad, 2 * (pred.detach() - target) / 4)
    with torch.no_grad():
        assert heatmap_mse(pred - 0.5 * pred.grad, target) < loss


def test_peak_normalised() -> None:
    torch.manual_seed(0)
    log_beliefs = torch.randn(2, 3, 5, 6) * 20 - 500  # far from 0: a naive exp would underflow to 0 everywhere
    heat = peak_normalised(log_beliefs)
    assert heat.shape == log_beliefs.shape
    torch.testing.assert_close(heat.amax(dim=(-2, -1)), torch.ones(2, 3))
    assert (heat > 0).all() and (heat <= 1).all()
    # Same argmax, and invariant to a per-map constant (log-beliefs are unnormalised).
    assert torch.equal(heat.flatten(-2).argmax(-1), log_beliefs.flatten(-2).argmax(-1))
    torch.testing.assert_close(peak_normalised(log_beliefs + torch.randn(2, 3, 1, 1) * 100), heat)
    # exp of the difference to the peak, on a known map.
    known = peak_normalised(maps([[0.0, math.log(0.5)], [math.log(0.25), -1e4]]))
    torch.testing.assert_close(known, maps([[1.0, 0.5], [0.25, 0.0]]))
