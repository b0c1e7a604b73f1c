"""Tests that `cnnmrf predict` survives what a hostile user feeds it, one image at a time: images of absurd shapes
(refused from the header), an image that breaks the code, images wider than 8 bits (seen as their 8-bit rendering);
and that its summary says what it did."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnmrf.data.images import decode_image, eight_bit
from cnnmrf.inference.photos import PosePredictor
from tests.fixtures import draw_image, tiny_annotations
from tests.helpers import assert_one_line_error, invoke, text

BOX = "70,45,90,75"  # torso box of the person in tiny image 1


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    """A 160x120 photo of one stick-figure person, as an 8-bit PNG."""
    draw_image(1, tiny_annotations(), np.random.default_rng(7)).save(tmp_path / "a.png")
    return tmp_path / "a.png"


def encoded(image: Image.Image, image_format: str) -> bytes:
    """``image`` saved in ``image_format``, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def test_images_of_absurd_shapes_are_refused_from_the_header_one_line_each(
    photo: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """A 500x1 or 100000x3 PNG (under 1 KB) took minutes and all memory, a 60x2000 one ended the batch with a
    traceback: each is now one error line, refused before it is decoded, and the other images are still processed."""
    shapes = {"flat.png": (500, 1), "tall.png": (60, 2000), "wide.png": (100000, 3)}
    for name, size in shapes.items():
        Image.new("RGB", size, (90, 80, 70)).save(tmp_path / name)
    assert (tmp_path / "wide.png").stat().st_size < 2000  # a tiny file: the size is only known from the header
    inputs = [tmp_path / name for name in shapes] + [photo]
    result = invoke("predict", *inputs, "-c", checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error:") for line in lines), result.stderr
    assert "flat.png: image is 500x1: a side shorter than 16 pixels" in lines[0]
    assert "tall.png: image is 60x2000: sides more than 20 to 1" in lines[1]
    assert "wide.png: image is 100000x3: a side shorter than 16 pixels" in lines[2]
    summary = f"4 image(s): 1 person found in 1, 3 failed; outputs in {tmp_path / 'out'}"
    assert f"{summary} (precision fp32, search detector)" in text(result)  # predict's auto: fp32 on every machine
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "a_pose.png"]
    assert decode_image(encoded(Image.new("RGB", (320, 16)), "PNG"))[0].size == (320, 16)  # 20:1, 16 px: allowed


def test_an_unexpected_error_in_one_image_is_one_line_and_the_batch_goes_on(
    photo: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("boom.png", "oom.png"):
        (tmp_path / name).write_bytes(photo.read_bytes())
    predict_file = PosePredictor.predict_file

    def breaks_on_some(self: PosePredictor, path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "boom.png":
            raise RuntimeError("Given input size: (32x34x1). Output size is too small\n(second line)")
        if path.name == "oom.png":
            raise MemoryError()
        return predict_file(self, path, *args, **kwargs)

    monkeypatch.setattr(PosePredictor, "predict_file", breaks_on_some)
    images = [tmp_path / "boom.png", tmp_path / "oom.png", photo]
    result = invoke("predict", *images, "-c", checkpoint, "--box", BOX, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {tmp_path / 'boom.png'}: failed unexpectedly: RuntimeError: Given input size: (32x34x1). Output "
        "size is too small (--debug shows the traceback)",
        f"error: {tmp_path / 'oom.png'}: out of memory (--debug shows where)",
    ]
    assert "3 image(s): 1 person found in 1, 2 failed" in text(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "a_pose.png"]
    debug = invoke("predict", *images, "-c", checkpoint, "--box", BOX, "-o", tmp_path / "out2", "--debug")
    assert isinstance(debug.exception, RuntimeError)  # --debug, even after the command: the error itself


def test_a_run_that_wrote_nothing_does_not_point_to_its_removed_folder(checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("predict", tmp_path / "nothere.jpg", "-c", checkpoint, "--box", BOX, "--out", tmp_path / "X")
    assert result.exit_code == 1 and "nothere.jpg: no such file" in result.stderr
    assert "1 image(s): 0 people found in 0, 1 failed; nothing written" in text(result)
    assert not (tmp_path / "X").exists()


def test_min_score_needs_a_calibrated_checkpoint(photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Uncalibrated, scores are null and only the best candidate is reported: --min-score would be ignored."""
    result = invoke("predict", photo, "-c", checkpoint, "--min-score", "0.9", "-o", tmp_path / "out")
    assert_one_line_error(result, "--min-score needs a calibrated checkpoint", str(checkpoint), "cnnmrf calibrate")
    assert not (tmp_path / "out").exists()


def bit_depth_renderings(picture: np.ndarray) -> dict[str, bytes]:
    """The (H, W) uint8 ``picture`` (0 and 255 included) in every greyscale format wider than 8 bits, each meaning the
    same picture by the rules of :mod:`cnnmrf.data.images`."""
    wide = picture.astype(np.uint16) * 257  # 0..255 -> 0..65535
    height, width = picture.shape
    return {
        "16-bit PNG": encoded(Image.fromarray(wide), "PNG"),
        "16-bit TIFF": encoded(Image.fromarray(wide), "TIFF"),
        "16-bit big-endian TIFF": encoded(
            Image.frombytes("I;16B", (width, height), wide.astype(">u2").tobytes()), "TIFF"
        ),
        "32-bit TIFF": encoded(Image.fromarray(picture.astype(np.int32) * 1000 - 5000), "TIFF"),  # its own range
        "float TIFF in [0, 1]": encoded(Image.fromarray(picture.astype(np.float32) / 255), "TIFF"),
        "float TIFF in [0, 255]": encoded(Image.fromarray(picture.astype(np.float32)), "TIFF"),  # its own range
    }


def test_greyscale_wider_than_8_bits_decodes_as_its_8_bit_rendering() -> None:
    picture = np.random.default_rng(0).integers(0, 256, size=(48, 64)).astype(np.uint8)
    picture[0, :2] = (0, 255)
    expected = np.repeat(picture[..., None], 3, axis=-1)  # (H, W, 3)
    np.testing.assert_array_equal(np.asarray(decode_image(encoded(Image.fromarray(picture), "PNG"))[0]), expected)
    for name, data in bit_depth_renderings(picture).items():
        image, factor = decode_image(data)
        assert image.mode == "RGB" and factor == 1.0, name
        np.testing.assert_array_equal(np.asarray(image), expected, err_msg=name)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to be upright
    buffer = io.BytesIO()
    Image.fromarray(picture.astype(np.uint16) * 257).save(buffer, format="PNG", exif=exif)
    upright, _ = decode_image(buffer.getvalue(), exif_orientation=True)
    np.testing.assert_array_equal(np.asarray(upright), np.rot90(expected, -1))
    # a dark 16-bit picture stays dark (the format's range, not the picture's); a float with NaN: NaN is black
    dark, _ = decode_image(encoded(Image.fromarray(np.full((20, 20), 4112, np.uint16)), "PNG"))  # 4112 = 16 * 257
    assert set(np.asarray(dark).ravel().tolist()) == {16}
    as_older_pillow_opens_it = Image.fromarray(np.full((20, 20), 4112, np.int32))  # mode I
    assert set(np.asarray(eight_bit(as_older_pillow_opens_it, png=True)).ravel().tolist()) == {16}
    floats = np.array([[np.nan, 0.5], [1.0, 0.0]], np.float32).repeat(10, 0).repeat(10, 1)
    rendered, _ = decode_image(encoded(Image.fromarray(floats), "TIFF"))
    assert np.asarray(rendered)[::10, ::10, 0].tolist() == [[0, 128], [255, 0]]


def test_a_16_bit_photo_gives_the_8_bit_photos_prediction(photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    grey = np.asarray(Image.open(photo).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    (tmp_path / "grey16.png").write_bytes(bit_depth_renderings(grey)["16-bit PNG"])
    result = invoke(
        "predict", tmp_path / "grey8.png", tmp_path / "grey16.png", "-c", checkpoint, "--json", "-o", tmp_path
    )
    assert result.exit_code == 0, result.output
    eight, sixteen = (json.loads(line) for line in result.stdout.splitlines())
    assert sixteen["people"] == eight["people"] and len(eight["people"]) == 1
