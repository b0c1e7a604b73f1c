"""Tests for device and precision resolution, and for bfloat16 training and inference on tiny models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import cnnmrf.devices as devices
import cnnmrf.training.loop as loop
from cnnmrf.devices import Precision, autocast, cpu_flags, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint
from cnnmrf.models.detector import DETECTOR_PRESETS
from cnnmrf.models.pose import PoseConfig, PoseModel, spatial_config_for
from cnnmrf.training.config import TrainConfig

CPU = torch.device("cpu")


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\nbogomips\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "amx_bf16"}, torch.bfloat16),
        ({"avx512f", "avx512_bf16"}, torch.bfloat16),
        ({"avx2", "avx512f"}, torch.float32),
        (set(), torch.float32),
    ],
)
def test_auto_picks_bf16_only_where_native(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: torch.dtype
) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    resolved = resolve_precision("auto", CPU)
    assert resolved.dtype == expected
    assert resolved.reason.startswith("auto:")
    assert resolved.name == ("bf16" if expected == torch.bfloat16 else "fp32")


def test_explicit_precision_is_taken_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: set())
    assert resolve_precision(Precision.bf16, CPU).dtype == torch.bfloat16  # emulated, but asked for
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"amx_bf16"})
    assert resolve_precision("fp32", CPU).dtype == torch.float32
    with pytest.raises(ValueError):
        resolve_precision("fp16", CPU)


def test_resolve_device_refuses_unknown_names() -> None:
    assert devices.resolve_device("cpu") == CPU
    with pytest.raises(CnnmrfError, match="--device"):
        devices.resolve_device("tpu")


def tiny_pose(with_spatial: bool = True) -> PoseModel:
    detector = DETECTOR_PRESETS["tiny"]()
    return PoseModel(PoseConfig(detector=detector, spatial=spatial_config_for(detector) if with_spatial else None))


def test_bf16_forward_matches_fp32() -> None:
    """bfloat16 keeps 8 bits of mantissa: the tiny detector's logits agree within 3% of their range."""
    torch.manual_seed(0)
    model = tiny_pose().eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(images)
        with autocast(CPU, torch.bfloat16):
            low = model(images.contiguous(memory_format=torch.channels_last))
    for name in ("detector", "spatial"):
        span = float(reference[name].max() - reference[name].min())
        assert (low[name].float() - reference[name]).abs().max() <= 0.03 * span, name


def test_spatial_model_stays_float32_under_autocast() -> None:
    model = tiny_pose().eval()
    with torch.no_grad(), autocast(CPU, torch.bfloat16):
        out = model(torch.rand(1, 3, 64, 64))
    assert out["detector"].dtype == torch.bfloat16
    assert out["spatial"].dtype == torch.float32


def test_bf16_training_step_changes_every_parameter_and_keeps_float32(tiny_h5: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = TrainConfig(
        stage="joint",
        preset="tiny",
        epochs=1,
        batch_size=4,
        workers=0,
        device="cpu",
        warmup_steps=1,
        max_steps_per_epoch=1,
        precision=Precision.bf16,
        detector_loss_weight=1.0,
    )
    start: dict[str, torch.Tensor] = {}

    def capture(model: PoseModel) -> None:
        start.update({k: v.detach().clone() for k, v in model.named_parameters()})

    original = loop._initial_model

    def initial(*args: object, **kwargs: object) -> PoseModel:
        model = original(*args, **kwargs)
        capture(model)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_initial_model", initial)
        loop.train(config, tiny_h5, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["train_config"]["precision"] == "bf16"
    model = model_from_checkpoint(state)  # a bf16 run's checkpoint loads as an ordinary float32 model
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name
        assert not torch.equal(param, start[name]), f"{name} did not change"
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.rand(1, 3, 64, 64))["spatial"]).all()


def test_precision_is_stored_as_plain_text(tiny_h5: Path, tmp_path: Path) -> None:
    config = replace(
        TrainConfig(preset="tiny", epochs=1, batch_size=4, workers=0, device="cpu", max_steps_per_epoch=1),
        precision=Precision.fp32,
    )
    loop.train(config, tiny_h5, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["precision"] == "fp32"


def test_auto_is_fp32_on_every_machine_for_commands_whose_answers_must_not_depend_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    assert resolve_precision("auto", CPU).dtype == torch.bfloat16
    resolved = resolve_precision("auto", CPU, auto_bf16=False)
    assert resolved.dtype == torch.float32 and "same on every machine" in resolved.reason
    assert resolve_precision("bf16", CPU, auto_bf16=False).dtype == torch.bfloat16  # asked for: taken as asked
