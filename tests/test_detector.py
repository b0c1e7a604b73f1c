"""Tests for the part detector and the pose model: shapes, gradients, full convolutionality and config round trips."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from cnnmrf.models.detector import DETECTOR_PRESETS, DetectorConfig, PartDetector
from cnnmrf.models.pose import PoseConfig, PoseModel, spatial_config_for
from cnnmrf.models.spatial import SpatialConfig

# Input side used for each preset's shape check: the preset's own size, except `paper` (256 px, wide layers),
# which is checked on 64 px crops to stay cheap (the layers do not depend on the input size).
SHAPE_SIDE = {"small": 128, "small-hr": 128, "paper": 64, "tiny": 64}


def tiny_config(**overrides: object) -> DetectorConfig:
    return replace(DETECTOR_PRESETS["tiny"](), **overrides)


def assert_gradients_reach_all(module: torch.nn.Module, min_nonzero: float = 0.95) -> None:
    """Every parameter has a finite gradient, and nearly all of them have a nonzero one (timm's pattern)."""
    named = list(module.named_parameters())
    assert named
    nonzero = 0
    for name, param in named:
        assert param.grad is not None, f"no gradient reached {name}"
        assert param.grad.shape == param.shape, name
        assert torch.isfinite(param.grad).all(), f"non-finite gradient in {name}"
        nonzero += int(param.grad.abs().sum() > 0)
    assert nonzero >= min_nonzero * len(named), f"only {nonzero}/{len(named)} parameters got a nonzero gradient"


def test_presets_are_complete() -> None:
    assert set(DETECTOR_PRESETS) == {"small", "small-hr", "paper", "tiny"}
    for name, make in DETECTOR_PRESETS.items():
        config = make()
        assert config.num_joints == 10 and config.stride == (2 if name == "small-hr" else 4), name
        assert config.input_size % (4 * 2 ** (config.num_scales - 1)) == 0, name
        assert make() is not make(), "presets must return fresh configs (the loop mutates input_size)"


@pytest.mark.parametrize("preset", sorted(DETECTOR_PRESETS))
def test_output_shape_every_preset(preset: str) -> None:
    torch.manual_seed(0)
    config = DETECTOR_PRESETS[preset]()
    model = PartDetector(config).eval()
    side = SHAPE_SIDE[preset]
    with torch.no_grad():
        out = model(torch.rand(2, 3, side, side))
    assert out.shape == (2, config.num_joints, side // config.stride, side // config.stride)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_small_preset_at_its_input_size() -> None:
    config = DETECTOR_PRESETS["small"]()
    model = PartDetector(config).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, config.input_size, config.input_size))
    assert out.shape == (1, 10, config.input_size // 4, config.input_size // 4)


@pytest.mark.parametrize("preset", ["tiny", "small", "small-hr"])
def test_gradient_reaches_every_parameter(preset: str) -> None:
    torch.manual_seed(0)
    model = PartDetector(DETECTOR_PRESETS[preset]()).train()
    if model.refine is not None:  # its zero-initialised output layer would block the gradient to the layer before
        torch.nn.init.normal_(model.refine[-1].weight, std=0.1)
    out = model(torch.rand(2, 3, 64, 64))  # (2, 10, 64 / stride, 64 / stride)
    (out * torch.randn_like(out)).sum().backward()
    assert_gradients_reach_all(model)


def test_stride_two_head_starts_as_the_upsampled_stride_four_logits() -> None:
    """With the same trained layers, output_stride 2 begins exactly as the stride-4 maps resized x2 (bilinear)."""
    torch.manual_seed(0)
    coarse = PartDetector(tiny_config()).eval()
    fine = PartDetector(tiny_config(output_stride=2)).eval()
    missing, unexpected = fine.load_state_dict(coarse.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("refine.") for key in missing)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(coarse(image), scale_factor=2, mode="bilinear")  # (2, 10, 32, 32)
        torch.testing.assert_close(fine(image), expected)


def test_output_stride_must_be_two_or_four() -> None:
    with pytest.raises(ValueError, match="output_stride"):
        PartDetector(tiny_config(output_stride=8))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_no_nan_on_extreme_inputs(batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = PartDetector(tiny_config(batch_norm=batch_norm))
    images = torch.stack([torch.zeros(3, 64, 64), torch.ones(3, 64, 64), torch.rand(3, 64, 64)])
    for mode in (model.train, model.eval):
        mode()
        out = model(images)
        assert torch.isfinite(out).all()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bool(norms) == batch_norm


def test_batch_norm_off_gives_conv_biases() -> None:
    model = PartDetector(tiny_config(batch_norm=False))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.bias is not None for m in convs)
    model = PartDetector(tiny_config(batch_norm=True))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs[:-1]) and convs[-1].bias is not None  # the output layer keeps its bias


@pytest.mark.parametrize("height, width", [(48, 80), (96, 32), (16, 16)])
def test_fully_convolutional_on_non_square_inputs(height: int, width: int) -> None:
    torch.manual_seed(0)
    model = PartDetector(tiny_config()).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 10, height // 4, width // 4)
    assert torch.isfinite(out).all()


def test_batch_items_are_independent_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = PartDetector(tiny_config()).eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        together = model(images)
        alone = torch.cat([model(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_input_is_normalised_inside_the_model() -> None:
    """The model takes [0, 1] images; the ImageNet mean/std are buffers, not saved in the state dict."""
    model = PartDetector(tiny_config())
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def pose_model(with_spatial: bool) -> PoseModel:
    detector = tiny_config()
    spatial = spatial_config_for(detector) if with_spatial else None
    return PoseModel(PoseConfig(detector=detector, spatial=spatial))


@pytest.mark.parametrize("with_spatial", [False, True])
def test_pose_model_outputs(with_spatial: bool) -> None:
    torch.manual_seed(0)
    model = pose_model(with_spatial).eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(image)
        assert set(out) == ({"detector", "spatial"} if with_spatial else {"detector"})
        for maps in out.values():
            assert maps.shape == (2, 10, 16, 16) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
        # use_spatial=False skips the spatial model and leaves the detector output unchanged.
        detector_only = model(image, use_spatial=False)
    assert set(detector_only) == {"detector"}
    torch.testing.assert_close(detector_only["detector"], out["detector"])
    if with_spatial:
        assert not torch.allclose(out["spatial"], out["detector"])


def test_pose_model_spatial_needs_the_training_input_size() -> None:
    model = pose_model(True).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="heatmaps must be"):
        model(torch.rand(1, 3, 96, 96))
    with torch.no_grad():  # the detector alone still runs on any size divisible by 16
        assert model(torch.rand(1, 3, 96, 96), use_spatial=False)["detector"].shape == (1, 10, 24, 24)


def test_pose_model_gradient_reaches_both_parts() -> None:
    torch.manual_seed(0)
    model = pose_model(True).train()
    out = model(torch.rand(2, 3, 64, 64))
    # A loss on the spatial output alone must train the detector through the spatial model too.
    (out["spatial"] * torch.randn_like(out["spatial"])).sum().backward()
    assert_gradients_reach_all(model.detector)
    spatial = model.spatial
    assert spatial is not None
    for name in ("pair_kernels", "pair_bias"):
        grad = getattr(spatial, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
    k = spatial.config.num_joints
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    kernel_grad = spatial.pair_kernels.grad.abs().sum(dim=(-2, -1))  # (K, K)
    assert (kernel_grad[off_diagonal] > 0).all(), "every pairwise kernel e(i|j), i != j, gets a gradient"
    assert (kernel_grad[~off_diagonal] == 0).all(), "the unused diagonal kernels get none"
    assert (spatial.pair_bias.grad[off_diagonal] != 0).all()


@pytest.mark.parametrize("preset", sorted(DETECTOR_PRESETS))
@pytest.mark.parametrize("with_spatial", [False, True])
def test_pose_config_round_trip(preset: str, with_spatial: bool) -> None:
    detector = DETECTOR_PRESETS[preset]()
    spatial = spatial_config_for(detector, histogram_sigma=2.0) if with_spatial else None
    config = PoseConfig(detector=detector, spatial=spatial)
    data = json.loads(json.dumps(config.to_dict()))  # what a checkpoint stores: plain JSON (tuples become lists)
    back = PoseConfig.from_dict(data)
    assert back == config
    assert isinstance(back.detector.bank_channels, tuple) and isinstance(back.detector.head_channels, tuple)
    if with_spatial:
        assert isinstance(back.spatial, SpatialConfig) and back.spatial.heatmap_size == (
            detector.input_size // detector.stride,
            detector.input_size // detector.stride,
        )
        assert back.spatial.histogram_sigma == 2.0
    else:
        assert back.spatial is None


def test_pose_config_from_dict_ignores_unknown_keys() -> None:
    data = PoseConfig(detector=tiny_config()).to_dict()
    data["detector"]["from_a_newer_version"] = 1
    assert PoseConfig.from_dict(data).detector == tiny_config()


def test_same_config_same_architecture() -> None:
    """A model rebuilt from its config accepts the original's weights exactly (what checkpoints rely on)."""
    torch.manual_seed(0)
    model = pose_model(True)
    rebuilt = PoseModel(PoseConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))))
    rebuilt.load_state_dict(model.state_dict())
    image = torch.rand(1, 3, 64, 64)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(image)["spatial"], model(image)["spatial"])
