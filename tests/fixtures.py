"""Builders for a tiny synthetic FLIC-format dataset (examples.mat + JPEGs), its FLIC.zip and its HDF5 file; and for
small videos."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import scipy.io
import torch
from PIL import Image, ImageDraw

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.preprocess import preprocess_flic
from cnnmrf.joints import JOINT_NAMES
from cnnmrf.models.checkpoint import checkpoint_state, save_checkpoint
from cnnmrf.models.detector import DETECTOR_PRESETS
from cnnmrf.models.pose import PoseConfig, PoseModel, spatial_config_for

IMAGE_WIDTH, IMAGE_HEIGHT = 160, 120
SEED = 1234
# The config the shared `tiny_h5` fixture is made with: 64 px inputs, 16x16 heatmaps.
TINY_CONFIG = PreprocessConfig(input_size=64, crop_scale=3.0, heatmap_stride=4, heatmap_sigma=1.5)

# FLIC `coords` columns (0-based) of the parts drawn here, and where they sit relative to the torso-box centre in
# units of torso-box height, for a person facing the camera (the person's left at the larger x).
PART_COLUMNS: dict[str, int] = {
    "lsho": 0,
    "lelb": 1,
    "lwri": 2,
    "rsho": 3,
    "relb": 4,
    "rwri": 5,
    "lhip": 6,
    "rhip": 9,
    "leye": 12,
    "reye": 13,
    "nose": 16,
}
FRONT_LAYOUT: dict[str, tuple[float, float]] = {
    "lsho": (0.28, -0.42),
    "lelb": (0.45, -0.02),
    "lwri": (0.50, 0.35),
    "rsho": (-0.28, -0.42),
    "relb": (-0.45, -0.02),
    "rwri": (-0.50, 0.35),
    "lhip": (0.18, 0.45),
    "rhip": (-0.18, 0.45),
    "leye": (0.07, -0.78),
    "reye": (-0.07, -0.78),
    "nose": (0.0, -0.68),
}
LIMBS = (("lsho", "lelb"), ("lelb", "lwri"), ("rsho", "relb"), ("relb", "rwri"), ("lsho", "lhip"), ("rsho", "rhip"))


@dataclass(frozen=True)
class TinyPerson:
    """One annotated person of the tiny dataset.

    pose: "front" (facing the camera), "back" (seen from behind: every left joint left of its right twin),
    "crossed" (facing the camera with crossed wrists: only lwri is left of rwri, so no observer-centric swap) or
    "reach" (facing the camera, left wrist stretched outside the 3x crop: invisible in the crop).
    """

    image: int  # index of the image file
    cx: float  # torso-box centre, original pixels
    cy: float
    height: float  # torso-box height (width is 2/3 of it)
    pose: str
    split: str  # "train" or "test"


# 12 examples (8 train, 4 test) on 9 images; images 0, 3 and 6 hold two people, as some FLIC frames do.
PERSONS: tuple[TinyPerson, ...] = (
    TinyPerson(0, 44.0, 58.0, 26.0, "front", "train"),
    TinyPerson(1, 80.0, 60.0, 30.0, "front", "train"),
    TinyPerson(2, 78.5, 57.0, 28.0, "front", "test"),
    TinyPerson(3, 46.0, 60.0, 28.0, "back", "train"),
    TinyPerson(4, 81.0, 62.0, 32.0, "crossed", "train"),
    TinyPerson(5, 79.0, 58.5, 27.0, "back", "test"),
    TinyPerson(6, 40.0, 62.0, 24.0, "reach", "train"),
    TinyPerson(0, 116.0, 60.0, 27.0, "front", "train"),
    TinyPerson(7, 82.0, 61.0, 31.0, "front", "test"),
    TinyPerson(3, 114.0, 57.0, 26.0, "front", "train"),
    TinyPerson(6, 120.0, 60.0, 25.0, "crossed", "train"),
    TinyPerson(8, 80.0, 60.0, 29.0, "front", "test"),
)
NUM_IMAGES = 9


def image_name(index: int) -> str:
    """File name (inside images/) of tiny image ``index``, in FLIC's movie-frame style."""
    return f"tiny-movie-{index:08d}.jpg"


def person_parts(person: TinyPerson, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Part positions (original pixels) of one person, with a little deterministic jitter."""
    layout = dict(FRONT_LAYOUT)
    if person.pose == "back":
        layout = {name: (-u, v) for name, (u, v) in layout.items()}
    elif person.pose == "crossed":
        layout["lwri"], layout["rwri"] = (-0.12, 0.25), (0.12, 0.22)
    elif person.pose == "reach":
        layout["lelb"], layout["lwri"] = (0.85, -0.05), (1.75, -0.1)
    parts = {}
    for name, (u, v) in layout.items():
        du, dv = rng.uniform(-0.03, 0.03, size=2)
        parts[name] = (person.cx + (u + du) * person.height, person.cy + (v + dv) * person.height)
    return parts


def tiny_annotations() -> list[dict]:
    """The examples.mat structs (as dicts with FLIC's field names), deterministic."""
    rng = np.random.default_rng(SEED)
    records = []
    for person in PERSONS:
        parts = person_parts(person, rng)
        coords = np.full((2, 29), np.nan)
        for name, column in PART_COLUMNS.items():
            coords[:, column] = parts[name]
        w, h = person.height * 2.0 / 3.0, person.height
        torsobox = np.array([person.cx - w / 2, person.cy - h / 2, person.cx + w / 2, person.cy + h / 2], np.float32)
        records.append(
            {
                "poselet_hit_idx": rng.integers(1, 150, size=(5, 1)).astype(np.uint16),
                "moviename": "tiny-movie",
                "coords": coords,
                "filepath": image_name(person.image),
                "imgdims": np.array([[IMAGE_HEIGHT, IMAGE_WIDTH, 3]], np.uint16),
                "currframe": np.array([[person.image]], np.uint16),
                "torsobox": torsobox[None],
                "istrain": np.array([[person.split == "train"]], np.uint8),
                "istest": np.array([[person.split == "test"]], np.uint8),
            }
        )
    return records


def draw_image(index: int, annotations: list[dict], rng: np.random.Generator) -> Image.Image:
    """A dark noisy frame with a grey stick figure and a bright dot on every labelled part of its people."""
    noise = rng.integers(15, 60, size=(IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(image)
    for record in annotations:
        if record["filepath"] != image_name(index):
            continue
        coords = record["coords"]
        parts = {name: (float(coords[0, c]), float(coords[1, c])) for name, c in PART_COLUMNS.items()}
        torso = [parts["lsho"], parts["rsho"], parts["rhip"], parts["lhip"]]
        draw.polygon(torso, fill=(90, 80, 110))
        for a, b in LIMBS:
            draw.line([parts[a], parts[b]], fill=(110, 100, 90), width=3)
        hx, hy = parts["nose"]
        draw.ellipse([hx - 5, hy - 6, hx + 5, hy + 5], fill=(120, 100, 90))
        for x, y in parts.values():
            draw.ellipse([x - 1.6, y - 1.6, x + 1.6, y + 1.6], fill=(255, 255, 255))
    return image


def write_tiny_flic(root: Path) -> Path:
    """Write the tiny FLIC copy (``examples.mat`` + ``images/``) into ``root`` and return ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    annotations = tiny_annotations()
    fields = list(annotations[0])
    table = np.empty((1, len(annotations)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(annotations):
        for f in fields:
            table[0, i][f] = record[f]
    scipy.io.savemat(root / "examples.mat", {"examples": table})
    rng = np.random.default_rng(SEED + 1)
    for index in range(NUM_IMAGES):
        draw_image(index, annotations, rng).save(root / "images" / image_name(index), quality=92)
    return root


def zip_tiny_flic(root: Path, archive: Path) -> Path:
    """Zip a FLIC folder the way FLIC.zip is laid out (``FLIC/examples.mat``, ``FLIC/images/...``)."""
    root = Path(root)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(root / "examples.mat", "FLIC/examples.mat")
        for path in sorted((root / "images").iterdir()):
            zf.write(path, f"FLIC/images/{path.name}")
    return Path(archive)


def build_tiny_h5(flic_root: Path, out: Path, config: PreprocessConfig = TINY_CONFIG, **kwargs) -> Path:
    """Preprocess a tiny FLIC copy into ``out`` (one worker) and return ``out``; kwargs go to preprocess_flic."""
    kwargs.setdefault("workers", 1)
    preprocess_flic(flic_root, out, config, **kwargs)
    return Path(out)


def expected_labels(observer: bool = True) -> np.ndarray:
    """(N, 10, 2) labels the preprocessor should store, computed by hand from the annotations and poses.

    Joints are FLIC columns lsho, lelb, lwri, rsho, relb, rwri, lhip, rhip, nose, plus the torso (mean of both
    shoulders and hips); with ``observer`` the arm labels of people seen from behind are swapped.
    """
    out = []
    for person, record in zip(PERSONS, tiny_annotations(), strict=True):
        c = record["coords"]
        joint = {name: c[:, col] for name, col in PART_COLUMNS.items()}
        if observer and person.pose == "back":
            for a, b in (("lsho", "rsho"), ("lelb", "relb"), ("lwri", "rwri")):
                joint[a], joint[b] = joint[b], joint[a]
        torso = (joint["lsho"] + joint["rsho"] + joint["lhip"] + joint["rhip"]) / 4
        names = ("lsho", "lelb", "lwri", "rsho", "relb", "rwri", "lhip", "rhip", "nose")
        out.append(np.stack([joint[n] for n in names] + [torso]))
    return np.stack(out)


def tiny_model(input_size: int = 64, spatial: bool = True, seed: int = 0) -> PoseModel:
    """A randomly initialised tiny pose model in eval mode (BatchNorm statistics perturbed so it is not trivial)."""
    torch.manual_seed(seed)
    detector = DETECTOR_PRESETS["tiny"]()
    detector.input_size = input_size
    model = PoseModel(PoseConfig(detector, spatial_config_for(detector) if spatial else None))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_tiny_checkpoint(path: Path, prep: PreprocessConfig, spatial: bool = True, seed: int = 0) -> Path:
    """Save a tiny model for ``prep``'s geometry as a checkpoint with the keys evaluate and predict need."""
    model = tiny_model(prep.input_size, spatial, seed)
    save_checkpoint(path, checkpoint_state(model, prep))
    return path


def torso_finder_model(input_size: int = 64) -> PoseModel:
    """A tiny detector (no spatial model) wired by hand so that its torso logit is the image's redness, 10 * (red -
    green) through its first bank's centre taps; every other joint scores 0. Stands in for a trained detector where a
    test needs the person search to depend on what the photo shows (:func:`red_blob_photo`)."""
    detector = DETECTOR_PRESETS["tiny"]()
    detector.input_size = input_size
    model = PoseModel(PoseConfig(detector, None))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm2d):  # the identity, in eval mode
                module.reset_running_stats()
                module.weight.fill_(1.0)
                module.bias.zero_()

        def centre_tap(conv: torch.nn.Conv2d, out: int, inp: int, value: float) -> None:
            k = conv.kernel_size[0] // 2
            conv.weight[out, inp, k, k] = value

        bank = model.detector.banks[0].layers  # conv, pool, conv, pool, conv: the full-resolution bank
        centre_tap(bank[0][0], 0, 0, 0.229)  # undoes the red channel's normalisation: red - 0.485 ...
        centre_tap(bank[0][0], 0, 1, -0.224)  # ... minus (green - 0.456)
        centre_tap(bank[2][0], 0, 0, 1.0)
        centre_tap(bank[4][0], 0, 0, 1.0)
        head = model.detector.head
        centre_tap(head[0][0], 0, 0, 1.0)
        centre_tap(head[1][0], 0, 0, 1.0)
        head[2].weight[JOINT_NAMES.index("torso"), 0, 0, 0] = 10.0
    return model.eval()


def red_blob_photo(cx: float, cy: float, size: tuple[int, int] = (IMAGE_WIDTH, IMAGE_HEIGHT)) -> Image.Image:
    """A grey noisy photo with one red Gaussian blob (sigma 6 px) centred on (cx, cy): what :func:`torso_finder_model`
    takes for a torso."""
    width, height = size
    pixels = np.random.default_rng(0).integers(40, 90, size=(height, width, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2))[..., None]  # (H, W, 1)
    return Image.fromarray((pixels * (1 - blob) + blob * np.array([230, 30, 30])).astype(np.uint8))


def write_video(
    path: Path,
    frames: Sequence[Image.Image],
    rate: int = 24,
    codec: str = "libx264",
    container: str | None = None,
    options: dict[str, str] | None = None,
    rotation: int = 0,
) -> Path:
    """Encode RGB pictures (all one size) as a video with PyAV: H.264 in the container ``path``'s suffix names by
    default; ``options`` are the container's (``{"movflags": "+faststart"}``: MP4 index first), ``rotation`` the
    display rotation (degrees counter-clockwise) stored in the stream."""
    with av.open(str(path), "w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=Fraction(rate))
        stream.width, stream.height = frames[0].size if frames else (160, 120)
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if not frames:
            output.start_encoding()
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        output.mux(stream.encode(None))
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction]:
    """Every frame of a video as a (H, W, 3) uint8 array, and its frame rate."""
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in video.decode(stream)], Fraction(stream.average_rate)
