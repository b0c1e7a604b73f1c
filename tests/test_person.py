"""Tests for the person detector's pieces: whole-frame data and targets, model, losses and box decoding."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from cnnmrf.data.flic import FlicSource, one_box_per_person
from cnnmrf.data.person_frames import (
    MAX_PEOPLE,
    PersonAugment,
    PersonFrameDataset,
    centre_targets,
    negative_weights,
    train_val_frames,
    whole_frame_input,
)
from cnnmrf.errors import CnnmrfError
from cnnmrf.inference.person_boxes import decode_boxes, detect_people
from cnnmrf.losses_person import centre_focal_loss, centre_l1, gather_cells, person_loss
from cnnmrf.models.person import (
    PERSON_PRESETS,
    PersonDetector,
    PersonDetectorConfig,
    load_person_checkpoint,
    person_detector_from,
    save_person_checkpoint,
)

LN2 = math.log(2.0)


# ---- data ----------------------------------------------------------------------------------------------------------


def test_centre_targets_put_one_at_the_centre_cell_with_its_height_and_offset() -> None:
    # Centre (21, 13) input pixels at stride 4: cell coordinates (5.5 - 0.5 + ..): (21.5 / 4 - 0.5, 13.5 / 4 - 0.5).
    box = np.array([[15.0, 4.0, 27.0, 22.0]])  # centre (21, 13), height 18
    heat, index, size, offset, mask = centre_targets(box, (8, 10), stride=4)
    cx, cy = 21.5 / 4 - 0.5, 13.5 / 4 - 0.5  # 4.875, 2.875
    assert mask.tolist() == [True] + [False] * (MAX_PEOPLE - 1)
    assert index[0] == 3 * 10 + 5  # cell (5, 3)
    assert heat[3, 5] == 1.0 and (heat == 1.0).sum() == 1
    np.testing.assert_allclose(offset[0], [cx - 5, cy - 3], atol=1e-6)
    assert size[0] == pytest.approx(math.log(18 / 4))
    sigma = 0.5  # 0.1 x 4.5 cells, raised to half a cell
    assert heat[3, 6] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)


def test_centre_targets_drop_centres_outside_the_map_and_keep_at_most_max_people() -> None:
    outside = np.array([[-20.0, 0.0, -8.0, 18.0]])
    heat, _, _, _, mask = centre_targets(outside, (8, 8), stride=4)
    assert not mask.any() and heat.max() == 0
    many = np.array([[4.0 * i, 0.0, 4.0 * i + 4, 6.0] for i in range(MAX_PEOPLE + 2)])
    assert centre_targets(many, (8, 4 * MAX_PEOPLE), stride=4)[4].sum() == MAX_PEOPLE


def test_centre_targets_put_a_centre_just_below_the_map_on_its_border_cell() -> None:
    # A portrait: torso 40 px tall (10 cells), centre y = 34 px, 2 px below an 8-cell (32 px) map: within reach.
    box = np.array([[6.0, 14.0, 32.0, 54.0]])  # centre (19, 34)
    heat, index, size, offset, mask = centre_targets(box, (8, 10), stride=4)
    # In cells the centre is (19.5 / 4 - 0.5, 34.5 / 4 - 0.5) = (4.375, 8.125): column 4, row 8 clipped to 7.
    assert mask[0] and index[0] == 7 * 10 + 4
    assert heat[7, 4] == 1.0
    np.testing.assert_allclose(offset[0], [0.375, 1.125], atol=1e-6)
    assert size[0] == pytest.approx(math.log(10.0))


def test_negative_weights_are_full_near_people_and_in_padding_low_elsewhere() -> None:
    inside = np.ones((8, 8), bool)
    inside[:, 6:] = False  # the last two columns are padding
    box = np.array([[2.0, 2.0, 6.0, 8.0]])  # centre (4, 5), height 6 input pixels; stride 4: cell centres 1.5 + 4 i
    weight = negative_weights(box, inside, stride=4, near=1.0, far_weight=0.1)
    assert weight[1, 0] == 1.0  # cell centre (1.5, 5.5): 2.55 from the centre
    assert weight[5, 4] == pytest.approx(0.1)  # far, in the frame
    assert (weight[:, 6:] == 1.0).all()


def test_one_box_per_person_merges_an_annotation_pair_with_the_same_joints() -> None:
    joints = np.array([[[0.0, 0.0], [10.0, 10.0]], [[0.5, 0.0], [10.0, 10.5]], [[300.0, 0.0], [310.0, 10.0]]])
    # The first person again, 1.5x as tall, centred 5 px lower; the third 300 px away.
    boxes = np.array([[0.0, 0.0, 40.0, 60.0], [-10.0, -10.0, 50.0, 80.0], [0.0, 0.0, 60.0, 90.0]])
    merged, kept = one_box_per_person(boxes, joints)
    height = math.sqrt(60.0 * 90.0)  # the geometric mean
    np.testing.assert_allclose(merged[0], [20 - height / 3, 32.5 - height / 2, 20 + height / 3, 32.5 + height / 2])
    np.testing.assert_array_equal(merged[1], boxes[2])  # another person (300 px away) stays as annotated
    np.testing.assert_array_equal(kept, joints[[0, 2]])
    alone, _ = one_box_per_person(boxes[:1], joints[:1])
    np.testing.assert_array_equal(alone, boxes[:1])


def test_whole_frame_input_pads_to_a_multiple() -> None:
    pixels, scale = whole_frame_input(Image.new("RGB", (300, 200), (200, 10, 10)), 160, 32)
    assert pixels.shape == (128, 160, 3) and scale == pytest.approx(160 / 300)
    assert pixels[:106].min(axis=(0, 1))[0] > 150 and pixels[107:].max() == 0


def test_validation_frames_are_the_held_out_peoples_and_apart_from_training(tiny_flic: Path) -> None:
    train, val = train_val_frames(FlicSource(tiny_flic), 0.25, 0)
    assert not {f.file for f in train} & {f.file for f in val}
    assert sum(len(f.boxes) for f in train + val) == 8  # the tiny copy's training people, no test one


def test_dataset_items_hold_the_frames_people_as_decodable_targets(tiny_flic: Path) -> None:
    source = FlicSource(tiny_flic)
    train, _ = train_val_frames(source, 0.0, 0)
    augment = PersonAugment(input_size=64, whole_frame=1.0, tile=0.0, flip=0.0, color=0.0)
    negative = np.full((30, 40, 3), 100, np.uint8)
    data = PersonFrameDataset(source, train, 4, augment, [negative], num_negatives=2, seed=3)
    assert len(data) == len(train) + 2
    item = data[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    assert item["heat"].shape == item["weight"].shape == (1, 16, 16)
    # Decoding the targets gives the frame's boxes at the whole-frame scale (64 / 160), moved by the draw's shift.
    people = int(item["mask"].sum())
    assert people == len(train[0].boxes)
    size, offset = torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 16, 16)
    size.view(-1)[item["index"][:people]] = item["size"][:people]
    offset.view(2, -1)[:, item["index"][:people]] = item["offset"][:people].T
    heat = torch.logit(item["heat"][None].clamp(1e-4, 1 - 1e-4))
    boxes = decode_boxes(heat, size, offset, k=people, scale=64 / 160)[0].numpy()
    order = np.argsort(boxes[:, 0])
    moved = boxes[order, :4] - train[0].boxes[np.argsort(train[0].boxes[:, 0])]  # (P, 4) original pixels
    np.testing.assert_allclose(moved, np.broadcast_to(moved[:1, [0, 1, 0, 1]], moved.shape), atol=0.05)
    assert 0 <= moved[0, 1] * 64 / 160 <= 16  # the 64 x 48 frame anywhere in the 64 x 64 input
    photo = data[len(train)]
    assert not photo["mask"].any() and (photo["weight"] == 1).all()
    assert torch.equal(data[1]["image"], data[1]["image"])  # the same draw again
    data.set_epoch(1)
    assert not torch.equal(data[0]["image"], item["image"]) or data[0]["heat"].sum() != item["heat"].sum()


def test_dataset_backgrounds_fill_only_around_the_frame(tiny_flic: Path) -> None:
    source = FlicSource(tiny_flic)
    train, _ = train_val_frames(source, 0.0, 0)
    plain = PersonAugment(input_size=64, whole_frame=1.0, tile=0.0, flip=0.0, color=0.0, background=0.0)
    black = PersonFrameDataset(source, train, 4, plain, seed=3)[0]["image"].numpy()  # (3, 64, 64)
    frame = black.any(axis=0)  # (64, 64) where the frame lies (FLIC frames are not pure black)
    assert 0 < frame.mean() < 1
    negative = np.full((30, 40, 3), 100, np.uint8)
    seen = set()
    for seed in range(6):
        filled = replace(plain, background=1.0)
        image = PersonFrameDataset(source, train, 4, filled, [negative], seed=seed)[0]["image"].numpy()
        reference = PersonFrameDataset(source, train, 4, plain, seed=seed)[0]["image"].numpy()
        inner = reference.any(axis=0) & ~binary_dilation(~reference.any(axis=0), iterations=2)  # off the edges
        np.testing.assert_array_equal(image[:, inner], reference[:, inner])  # the frame is drawn over it
        around = image[:, ~binary_dilation(reference.any(axis=0), iterations=2)]  # (3, N) the background
        assert (around == around[:, :1]).all() and around.any()  # one flat colour or the flat person-free photo
        seen.add("photo" if (around == 100).all() else "colour")
    assert seen == {"photo", "colour"}


# ---- model ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PERSON_PRESETS))
def test_model_maps_have_stride_4_are_finite_and_train_every_parameter(preset: str) -> None:
    torch.manual_seed(0)
    model = PersonDetector(PERSON_PRESETS[preset]())
    out = model(torch.rand(2, 3, 64, 96))
    assert out["heat"].shape == out["size"].shape == (2, 1, 16, 24) and out["offset"].shape == (2, 2, 16, 24)
    assert all(torch.isfinite(v).all() for v in out.values())
    sum(v.square().mean() for v in out.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_model_refuses_sides_that_are_no_multiple_and_starts_with_a_low_centre_prior() -> None:
    model = PersonDetector(PERSON_PRESETS["tiny"]()).eval()
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 3, 40, 48))
    assert torch.sigmoid(model(torch.rand(1, 3, 32, 32))["heat"]).mean() < 0.1


def test_config_round_trip_and_refusals() -> None:
    config = PersonDetectorConfig(widths=(8, 16, 16, 32), head_channels=16)
    assert PersonDetectorConfig.from_dict(config.to_dict()) == config
    for bad in ({"widths": [8]}, {"head_channels": 0}, {"colour": 1}, "small"):
        with pytest.raises(ValueError):
            PersonDetectorConfig.from_dict(bad)


def test_checkpoint_round_trip_and_foreign_files(tmp_path: Path) -> None:
    model = PersonDetector(PERSON_PRESETS["tiny"]())
    save_person_checkpoint(tmp_path / "p.pt", model, epoch=3)
    state = load_person_checkpoint(tmp_path / "p.pt")
    assert state["epoch"] == 3
    again = person_detector_from(state)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name, message in (("other.pt", "not a person detector"), ("text.pt", "not a readable"), ("no.pt", "not exist")):
        with pytest.raises(CnnmrfError, match=message):
            load_person_checkpoint(tmp_path / name)


# ---- losses --------------------------------------------------------------------------------------------------------


def test_focal_loss_known_values() -> None:
    logits = torch.zeros(1, 1, 1, 2)  # p = 0.5 in both cells
    target = torch.tensor([[[[1.0, 0.0]]]])  # a centre, a plain negative
    # centre: -(0.5)^2 log 0.5; negative: -(1 - 0)^4 (0.5)^2 log 0.5; one centre
    assert centre_focal_loss(logits, target).item() == pytest.approx(0.5 * LN2)
    assert centre_focal_loss(logits, target, torch.tensor([[[[1.0, 0.0]]]])).item() == pytest.approx(0.25 * LN2)
    near = torch.tensor([[[[1.0, 0.5]]]])  # the negative's penalty reduced by (1 - 0.5)^4
    assert centre_focal_loss(logits, near).item() == pytest.approx(0.25 * LN2 * (1 + 0.0625))
    # No centre at all: the sum of negatives, divided by 1.
    assert centre_focal_loss(logits, torch.zeros(1, 1, 1, 2)).item() == pytest.approx(0.5 * LN2)
    # A confident right answer costs almost nothing; a confident wrong one a lot.
    good = centre_focal_loss(torch.tensor([[[[9.0, -9.0]]]]), target).item()
    bad = centre_focal_loss(torch.tensor([[[[-9.0, 9.0]]]]), target).item()
    assert good < 1e-6 and bad > 10


def test_centre_l1_and_gather_known_values() -> None:
    maps = torch.arange(12.0).view(1, 2, 2, 3)  # channel 0: 0..5, channel 1: 6..11
    index = torch.tensor([[4, 0]])  # cell (x 1, y 1), cell (0, 0)
    assert gather_cells(maps, index).tolist() == [[[4.0, 10.0], [0.0, 6.0]]]
    target = torch.tensor([[[3.0, 10.0], [100.0, 100.0]]])
    assert centre_l1(maps, index, target, torch.tensor([[True, False]])).item() == pytest.approx(1.0)
    assert centre_l1(maps, index, target, torch.tensor([[False, False]])).item() == 0.0


def test_person_loss_adds_its_parts() -> None:
    out = {"heat": torch.zeros(1, 1, 1, 2), "size": torch.full((1, 1, 1, 2), 2.0), "offset": torch.zeros(1, 2, 1, 2)}
    batch = {
        "heat": torch.tensor([[[[1.0, 0.0]]]]),
        "weight": torch.ones(1, 1, 1, 2),
        "index": torch.tensor([[0]]),
        "size": torch.tensor([[1.5]]),
        "offset": torch.tensor([[[0.25, -0.25]]]),
        "mask": torch.tensor([[True]]),
    }
    total, parts = person_loss(out, batch, size_weight=2.0)
    assert parts == pytest.approx({"focal": 0.5 * LN2, "size": 0.5, "offset": 0.5})
    assert total.item() == pytest.approx(0.5 * LN2 + 2 * 0.5 + 0.5)


# ---- decoding ------------------------------------------------------------------------------------------------------


def test_decode_boxes_keeps_local_maxima_best_first_in_original_pixels() -> None:
    heat = torch.full((1, 1, 6, 8), -10.0)
    heat[0, 0, 1, 2], heat[0, 0, 1, 3] = 3.0, 2.0  # a peak and its weaker neighbour (suppressed)
    heat[0, 0, 4, 6] = 1.0  # a second, weaker peak
    size = torch.full((1, 1, 6, 8), math.log(6.0))  # height 24 input pixels
    offset = torch.zeros(1, 2, 6, 8)
    offset[0, :, 4, 6] = torch.tensor([0.25, -0.5])
    boxes = decode_boxes(heat, size, offset, k=2, stride=4, scale=0.5)[0]
    cx, cy = (2 + 0.5) * 4 - 0.5, (1 + 0.5) * 4 - 0.5  # 9.5, 5.5 input pixels
    expected = (torch.tensor([cx - 8, cy - 12, cx + 8, cy + 12]) + 0.5) / 0.5 - 0.5
    torch.testing.assert_close(boxes[0, :4], expected)
    assert boxes[0, 4].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    cx, cy = (6.25 + 0.5) * 4 - 0.5, (3.5 + 0.5) * 4 - 0.5
    torch.testing.assert_close(boxes[1, :4], (torch.tensor([cx - 8, cy - 12, cx + 8, cy + 12]) + 0.5) / 0.5 - 0.5)


def test_decode_boxes_pads_when_k_exceeds_the_cells() -> None:
    boxes = decode_boxes(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), torch.zeros(2, 2, 1, 2), k=5)
    assert boxes.shape == (2, 5, 5) and (boxes[:, 2:] == 0).all()


def test_detect_people_gives_k_boxes_in_photo_pixels() -> None:
    torch.manual_seed(0)
    model = PersonDetector(PERSON_PRESETS["tiny"]()).eval()
    boxes = detect_people(model, Image.new("RGB", (200, 120), (90, 90, 90)), k=3, long_side=64)
    assert boxes.shape == (3, 5) and np.isfinite(boxes).all()
    assert (np.diff(boxes[:, 4]) <= 0).all()


def test_grid_items_hold_every_tiled_frames_people_in_their_cells(tiny_flic: Path) -> None:
    source = FlicSource(tiny_flic)
    train, _ = train_val_frames(source, 0.0, 0)
    augment = PersonAugment(input_size=96, tile=1.0, color=0.0, far_weight=0.1)
    data = PersonFrameDataset(source, train, 4, augment, seed=0)
    sizes = {len(f.boxes) for f in train}
    for i in range(4):
        item = data[i]
        people = int(item["mask"].sum())
        assert people >= 4 * min(sizes)  # at least a 2 x 2 grid of frames, each with all its people
        assert (item["heat"].flatten()[item["index"][:people]] == 1).all()
        weight = item["weight"][0]
        assert (weight == 1).any() and torch.isclose(
            weight, torch.tensor(0.1)
        ).any()  # padding between frames, frames' insides
        # Each frame of a grid is at most a cell (96 / 2 or 96 / 3 px) wide: torso boxes at most that tall.
        assert (torch.exp(item["size"][:people]) * 4 <= 48).all()
