"""Tests for the photos framed unlike FLIC: frames shrunk into a canvas, and tiled, with their people mapped along."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnmrf.evaluation.layouts import FILL, Piece, compose, map_points, padded, shrunk_size, tiled


def blocks(width: int, height: int, value: int = 255, block: tuple[int, int, int, int] = (0, 0, 2, 2)) -> Image.Image:
    """A black RGB image with one ``value``-grey block over pixels x1 <= x < x2, y1 <= y < y2."""
    pixels = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = block
    pixels[y1:y2, x1:x2] = value
    return Image.fromarray(pixels)


def person(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """One person: a torso box with corners (x, y) and (x + 4, y + 6), and two joints, (x, y) and a NaN."""
    return np.array([[x, y, x + 4, y + 6]]), np.array([[[x, y], [np.nan, np.nan]]])


def centroid(image: Image.Image) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of an image, pixel centres at integers."""
    weight = np.asarray(image, dtype=np.float64).sum(axis=-1)
    ys, xs = np.mgrid[0 : weight.shape[0], 0 : weight.shape[1]]
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def test_shrunk_size_rounds_each_side_and_refuses_factors_outside_zero_to_one() -> None:
    assert shrunk_size((720, 480), 1 / 8) == (90, 60)
    assert shrunk_size((720, 480), 1.0) == (720, 480)
    assert shrunk_size((7, 5), 0.5) == (4, 2)  # 3.5 -> 4, 2.5 -> 2 (round half to even)
    assert shrunk_size((10, 10), 0.01) == (1, 1)
    for factor in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="lies in"):
            shrunk_size((10, 10), factor)


def test_map_points_maps_pixel_edges_onto_pixel_edges() -> None:
    piece = Piece((4, 2), (3, 1))  # an 8 x 4 image halved, pasted with its top-left pixel at (3, 1)
    points = np.array([[-0.5, -0.5], [0.0, 0.0], [1.5, 1.5], [7.5, 3.5], [np.nan, 2.0]])
    expected = np.array([[2.5, 0.5], [2.75, 0.75], [3.5, 1.5], [6.5, 2.5], [np.nan, 1.75]])
    np.testing.assert_allclose(map_points(points, (8, 4), piece), expected)


def test_compose_pastes_the_area_averaged_frame_and_maps_its_people() -> None:
    frame = blocks(8, 4, 200, (2, 0, 4, 2))  # a 2 x 2 block that halves into exactly one pixel, (1, 0)
    boxes, joints = person(1.5, 1.5)
    layout = compose([(frame, boxes, joints)], [Piece((4, 2), (3, 1))], (8, 4))
    pixels = np.asarray(layout.image)
    assert layout.image.size == (8, 4)
    np.testing.assert_array_equal(pixels[1, 4], [200, 200, 200])  # (1, 0) + (3, 1)
    np.testing.assert_array_equal(pixels[1:3, 3:7].sum(), 600)  # the rest of the frame is black
    np.testing.assert_array_equal(pixels[0, 0], FILL)
    np.testing.assert_array_equal(pixels[3, 7], FILL)
    np.testing.assert_allclose(layout.boxes, [[3.5, 1.5, 5.5, 4.5]])
    np.testing.assert_allclose(layout.joints, [[[3.5, 1.5], [np.nan, np.nan]]])
    np.testing.assert_array_equal(layout.source, [0])
    np.testing.assert_allclose(layout.scale, [0.5])


def test_a_bright_spot_lands_where_its_point_is_mapped() -> None:
    frame = blocks(64, 48, 255, (20, 12, 28, 20))  # centre (23.5, 15.5)
    piece = Piece(shrunk_size(frame.size, 0.25), (30, 7))
    layout = compose([(frame, np.zeros((0, 4)), np.zeros((0, 1, 2)))], [piece], frame.size, (0, 0, 0))
    np.testing.assert_allclose(centroid(layout.image), map_points(np.array([23.5, 15.5]), frame.size, piece))
    np.testing.assert_allclose(map_points(np.array([23.5, 15.5]), frame.size, piece), [35.5, 10.5])


@pytest.mark.parametrize("factor", [1 / 8, 1 / 4, 1 / 3, 1 / 2, 1.0])
def test_padded_keeps_the_frame_whole_and_its_people_shrunk_by_the_factor(factor: float) -> None:
    frame = blocks(72, 48, 255, (0, 0, 72, 48))  # all white: where it lies is where the canvas is white
    boxes, joints = person(10.0, 20.0)
    for seed in range(5):
        layout = padded(frame, boxes, joints, factor, np.random.default_rng(seed))
        white = np.argwhere((np.asarray(layout.image) == 255).all(axis=-1))  # (M, 2) rows, columns
        (y1, x1), (y2, x2) = white.min(axis=0), white.max(axis=0)
        assert (x2 - x1 + 1, y2 - y1 + 1) == shrunk_size(frame.size, factor)
        assert len(white) == np.prod(shrunk_size(frame.size, factor))  # one whole rectangle
        assert layout.image.size == frame.size
        np.testing.assert_allclose(layout.boxes[0, 3] - layout.boxes[0, 1], 6 * factor)
        np.testing.assert_allclose(layout.boxes[0, :2], (np.array([10.0, 20.0]) + 0.5) * factor - 0.5 + [x1, y1])
        np.testing.assert_allclose(layout.joints[0, 0], layout.boxes[0, :2])
        assert np.isnan(layout.joints[0, 1]).all()
        np.testing.assert_allclose(layout.scale, [factor])


def test_padded_at_factor_one_is_the_frame_itself() -> None:
    frame = blocks(9, 7, 80, (1, 2, 5, 6))
    boxes, joints = person(3.0, 1.0)
    layout = padded(frame, boxes, joints, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(layout.image), np.asarray(frame))
    np.testing.assert_allclose(layout.boxes, boxes)
    np.testing.assert_allclose(layout.joints, joints)


def test_padded_draws_places_all_over_the_canvas() -> None:
    frame = blocks(40, 30)
    corners = set()
    for seed in range(200):
        layout = padded(frame, *person(0.0, 0.0), 0.5, np.random.default_rng(seed))
        corners.add(tuple(np.round(layout.boxes[0, :2] + 0.25, 6)))  # (0, 0) -> 0.5 * 0.5 - 0.5 + offset
    xs, ys = {c[0] for c in corners}, {c[1] for c in corners}
    assert min(xs) >= 0 and max(xs) <= 20 and min(ys) >= 0 and max(ys) <= 15  # offsets 0..20 and 0..15
    assert len(xs) > 15 and len(ys) > 12


def test_tiled_puts_each_frame_in_its_cell_row_by_row() -> None:
    frames = [(blocks(8, 4, 40 * (i + 1), (0, 0, 8, 4)), *person(float(i), 0.0)) for i in range(4)]
    layout = tiled(frames, 2)
    pixels = np.asarray(layout.image)[..., 0]
    np.testing.assert_array_equal(pixels, [[40] * 4 + [80] * 4] * 2 + [[120] * 4 + [160] * 4] * 2)
    np.testing.assert_array_equal(layout.source, [0, 1, 2, 3])
    offsets = np.array([[0, 0], [4, 0], [0, 2], [4, 2]])
    expected = (np.array([[i, 0.0] for i in range(4)]) + 0.5) * 0.5 - 0.5 + offsets
    np.testing.assert_allclose(layout.joints[:, 0], expected)
    np.testing.assert_allclose(layout.boxes[:, 3] - layout.boxes[:, 1], 3.0)
    np.testing.assert_allclose(layout.scale, 0.5)


def test_tiled_centres_frames_in_uneven_cells_and_leaves_empty_cells_filled() -> None:
    frames = [(blocks(6, 4, 255, (0, 0, 6, 4)), *person(0.0, 0.0)) for _ in range(2)]
    layout = tiled(frames, 3, canvas=(10, 6))  # columns cut at 0, 3, 7, 10; rows at 0, 2, 4, 6
    pixels = np.asarray(layout.image)
    # both frames halved to 3 x 2: frame 0 fills its 3 x 2 cell, frame 1 is centred in its 4 x 2 cell, at (3, 0)
    white = (pixels == 255).all(axis=-1)
    expected = np.zeros((6, 10), bool)
    expected[0:2, 0:6] = True
    np.testing.assert_array_equal(white, expected)
    np.testing.assert_array_equal(pixels[1, 6], FILL)
    np.testing.assert_array_equal(pixels[5, 5], FILL)
    np.testing.assert_allclose(layout.joints[:, 0], [[-0.25, -0.25], [2.75, -0.25]])


def test_tiled_refuses_more_frames_than_cells_or_none() -> None:
    frame = (blocks(8, 4), *person(0.0, 0.0))
    with pytest.raises(ValueError, match="grid holds"):
        tiled([frame] * 5, 2)
    with pytest.raises(ValueError, match="grid holds"):
        tiled([], 2)
