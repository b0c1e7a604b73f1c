"""Pose on arbitrary photos: expand inputs, find the person, crop, run the model and draw the skeleton.

Person search (used when no torso box is given): the part detector is fully convolutional, so it scans the whole
photo resized at a few scales, each chosen so that one plausible torso height (``SearchConfig.min_fraction`` to
``max_fraction`` of the image height, geometrically spaced) becomes the torso height the model was trained on,
``input_size / crop_scale`` model-input pixels. At every scale and position a person hypothesis scores the torso
channel's logit plus the mean, over the other joints, of each joint's best logit within ``context`` torso heights
(a max-pool), so a torso-like blob without arms, head and hips nearby scores low. The best (scale, position) over all
scales gives the torso box: centred on the (sub-pixel refined) peak, as tall as the training torso height at that
scale (2:3 wide). The crop around that box then goes through the full model exactly as with a given ``--box``; the
box is then re-fitted to the predicted torso (centred on the ``torso`` joint, as tall as the shoulder-to-hip
distance) and the crop predicted again, ``SearchConfig.refine_steps`` times, which corrects the search's coarse scale.

Limits: one person per image (the best-scoring one); an upper-body model, as FLIC's (people seen from roughly hip
level up); torso sizes outside the searched range, strong rotations and crowded frames are missed or confused; the
scale is only known to the search's step (about +-16%, within the training augmentation's +-25%); it works best when
the person fills a good part of the frame, as in FLIC's movie stills.
"""

from __future__ import annotations

import glob
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cnnmrf.data.format import PreprocessConfig
from cnnmrf.data.geometry import crop_transform, heatmap_to_input
from cnnmrf.data.heatmaps import decode_heatmaps
from cnnmrf.data.images import decode_image, render
from cnnmrf.devices import Precision, autocast, resolve_device, resolve_precision
from cnnmrf.errors import CnnmrfError
from cnnmrf.evaluation.inference import Joints, final_joints, predict_crops
from cnnmrf.files import atomic_write_bytes
from cnnmrf.joints import JOINT_NAMES, SKELETON, TORSO_PARTS
from cnnmrf.models.checkpoint import load_pose
from cnnmrf.models.detector import PartDetector
from cnnmrf.models.pose import PoseModel

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TORSO = JOINT_NAMES.index("torso")
BOX_ASPECT = 2.0 / 3.0  # FLIC torso boxes: width / height

# Drawing colours (RGB) by side; "left"/"right" follow the labels (observer-centric: "left" is image-right for a
# person facing the camera). A limb is left or right when its joints are on that side or central, else centre.
SIDE_COLOURS: dict[str, tuple[int, int, int]] = {"left": (0, 220, 255), "right": (255, 0, 200), "centre": (150, 255, 0)}
JOINT_SIDES: tuple[str, ...] = tuple(
    "left" if n[0] == "l" else "right" if n[0] == "r" else "centre" for n in JOINT_NAMES
)


def _limb_side(a: int, b: int) -> str:
    sides = {JOINT_SIDES[a], JOINT_SIDES[b]} - {"centre"}
    return sides.pop() if len(sides) == 1 else "centre"


LIMB_SIDES: tuple[str, ...] = tuple(_limb_side(a, b) for a, b in SKELETON)


# ---- inputs ------------------------------------------------------------------------------------------------------


def expand_inputs(args: Sequence[str], skip_dir: Path | None = None) -> tuple[list[Path], list[str]]:
    """Turn IMAGE arguments (files, folders, glob patterns) into image paths.

    Files are kept as given (even if missing or not images: they fail later, one by one); a folder gives its images
    (by suffix, sorted, not recursive), skipping earlier ``*_pose.png`` outputs when it is ``skip_dir``; a pattern the
    shell did not expand is expanded here (sorted). Duplicates are dropped, order is kept.

    Returns:
        The paths and one message per argument that yielded nothing (an empty folder, a pattern matching nothing).
    """
    paths: list[Path] = []
    problems: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if skip_dir is not None and path.resolve() == Path(skip_dir).resolve():
                found = [p for p in found if not p.name.endswith("_pose.png")]
            if not found:
                problems.append(f"{arg}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths.extend(found)
        elif not path.exists() and glob.has_magic(arg):
            found = sorted(Path(p) for p in glob.glob(arg) if Path(p).is_file())
            if not found:
                problems.append(f"{arg}: no file matches this pattern")
            paths.extend(found)
        else:
            paths.append(path)
    unique = list(dict.fromkeys(paths))
    return unique, problems


def output_stems(paths: Sequence[Path]) -> list[str]:
    """Output name stems, one per path: the file stem, with ``-2``, ``-3``... appended when stems repeat."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


def parse_box(text: str) -> np.ndarray:
    """Parse ``x1,y1,x2,y2`` (original-image pixels) into a (4,) float array.

    Raises:
        CnnmrfError: not four numbers, or not ``x1 < x2`` and ``y1 < y2``.
    """
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise CnnmrfError(f"--box must be four numbers x1,y1,x2,y2 (the torso box, in pixels), not {text!r}")
    if not (box[0] < box[2] and box[1] < box[3]):
        raise CnnmrfError(f"--box {text} must have x1 < x2 and y1 < y2")
    return box


def check_box(box: np.ndarray, size: tuple[int, int]) -> None:
    """A torso box must have its centre inside the (width, height) image and be at least 2 pixels tall.

    Raises:
        CnnmrfError: it does not.
    """
    width, height = size
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    text = ",".join(f"{v:g}" for v in box)
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise CnnmrfError(f"box {text} lies outside the {width}x{height} image")
    if box[3] - box[1] < 2:
        raise CnnmrfError(f"box {text} is less than 2 pixels tall")


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes.

    Raises:
        CnnmrfError: missing, a folder, or unreadable.
    """
    if not path.exists():
        raise CnnmrfError("no such file")
    if not path.is_file():
        raise CnnmrfError("not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise CnnmrfError(f"cannot read it ({err.strerror or err})") from err


def peek_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding, or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def load_image(data: bytes, target_scale: float = 1.0) -> tuple[Image.Image, float]:
    """Decode to RGB (grey, palette, RGBA... converted), upright per the EXIF orientation, letting JPEGs decode
    smaller when ``target_scale`` < 1.

    Returns:
        The image and its decode factor (original pixels per decoded pixel).

    Raises:
        CnnmrfError: not a readable image, truncated, or larger than ``cnnmrf.data.images.MAX_PIXELS``.
    """
    try:
        return decode_image(data, target_scale=min(1.0, target_scale), exif_orientation=True)
    except ValueError as err:
        raise CnnmrfError(str(err)) from err


# ---- person search -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchConfig:
    """Where and how finely the person search looks (see the module docstring)."""

    # Training's +-25% scale augmentation stretches the range covered to about 0.2..1.0 of the image height. Each
    # extra scale, or a smaller min_fraction, costs time: the detector's work grows as 1 / min_fraction^2.
    min_fraction: float = 0.25  # smallest torso height searched, as a fraction of the image height
    max_fraction: float = 0.8  # largest torso height searched, as a fraction of the image height
    num_scales: int = 5  # geometrically spaced torso heights between the two (steps of 1.34x)
    context: float = 1.2  # radius, in torso heights, in which the other joints support a torso hypothesis
    refine_steps: int = 2  # times the found box is re-fitted to the predicted shoulders and hips, then re-predicted


@dataclass
class PersonHypothesis:
    """The best person found: ``box`` (4,) torso box in original pixels, its ``score`` and the resize ``factor``."""

    box: np.ndarray
    score: float
    factor: float


def torso_box(cx: float, cy: float, height: float) -> np.ndarray:
    """(4,) FLIC-style torso box (2:3 wide) centred on (cx, cy)."""
    half_w, half_h = BOX_ASPECT * height / 2, height / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=np.float64)


def box_from_joints(
    joints: np.ndarray, previous: np.ndarray, image_size: tuple[int, int], max_change: float = 1.5
) -> np.ndarray:
    """Torso box implied by predicted joints: centred on the ``torso`` joint (kept inside the image), as tall as the
    distance between the shoulders' and hips' midpoints (on FLIC the torso box height is 0.99x that distance, median
    over the training split), its height kept within ``max_change``x of the ``previous`` box's.

    Shapes: joints (K, 2) original pixels, previous (4,) -> (4,); image_size is (width, height).
    """
    lsho, rsho, lhip, rhip = TORSO_PARTS
    shoulders = joints[[lsho, rsho]].mean(axis=0)  # (2,)
    hips = joints[[lhip, rhip]].mean(axis=0)  # (2,)
    before = previous[3] - previous[1]
    height = float(np.clip(np.linalg.norm(shoulders - hips), before / max_change, before * max_change))
    centre = np.clip(joints[TORSO], 0, np.asarray(image_size, dtype=np.float64) - 1)  # (2,)
    return torso_box(*centre, height)


def search_heights(image_height: float, config: SearchConfig) -> np.ndarray:
    """(num_scales,) torso heights searched, in original pixels, smallest first."""
    return np.geomspace(config.min_fraction * image_height, config.max_fraction * image_height, config.num_scales)


def person_score_map(logits: torch.Tensor, radius: int, torso: int = TORSO) -> torch.Tensor:
    """Torso hypothesis scores: the torso logit plus the mean over the other joints of their best logit nearby.

    Shapes: logits (K, H, W) -> (H, W).
    """
    others = torch.cat([logits[:torso], logits[torso + 1 :]])  # (K-1, H, W)
    k = 2 * radius + 1  # square window max, done separably (rows, then columns): O(k) instead of O(k^2)
    support = F.max_pool2d(others[None], (1, k), stride=1, padding=(0, radius))  # (1, K-1, H, W)
    support = F.max_pool2d(support, (k, 1), stride=1, padding=(radius, 0))[0]  # (K-1, H, W)
    return logits[torso] + support.mean(dim=0)  # (H, W)


@torch.no_grad()
def find_person(
    detector: PartDetector,
    image: Image.Image,
    torso_px: float,
    decode_factor: float = 1.0,
    config: SearchConfig | None = None,
    device: torch.device | str = "cpu",
) -> PersonHypothesis:
    """Find the best-scoring person in a photo by scanning it with the part detector at several scales.

    Args:
        detector: the part detector (eval mode, on ``device``).
        image: the RGB photo, decoded with ``decode_factor``.
        torso_px: torso height the model was trained on, in model-input pixels (``input_size / crop_scale``).
        decode_factor: original pixels per decoded pixel.
        config: the searched torso sizes (default :class:`SearchConfig`).
        device: where the detector lives.

    Returns:
        The best hypothesis, box in original-image pixels.
    """
    config = config or SearchConfig()
    stride = detector.config.stride
    multiple = stride * 2 ** (detector.config.num_scales - 1)  # every pyramid level must divide evenly
    radius = max(1, round(config.context * torso_px / stride))
    width, height = image.size
    best: PersonHypothesis | None = None
    for torso_height in search_heights(height * decode_factor, config):
        factor = torso_px / torso_height * decode_factor  # decoded pixels -> resized pixels
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        resized = np.array(image.resize(size, Image.BILINEAR), dtype=np.uint8)  # (h, w, 3)
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, h, w)
        pad_h, pad_w = -size[1] % multiple, -size[0] % multiple
        logits = detector(F.pad(x, (0, pad_w, 0, pad_h)))[0].float()  # (K, H', W')
        logits = logits[:, : -(-size[1] // stride), : -(-size[0] // stride)]  # (K, H, W): drop the padding
        scores = person_score_map(logits, radius)  # (H, W)
        (peak,), (score,) = decode_heatmaps(scores[None].cpu(), refine=True)  # (1, 2), (1,)
        if best is None or float(score) > best.score:
            fx, fy = size[0] / width, size[1] / height  # actual resize factors per axis
            qx, qy = heatmap_to_input(peak.double().numpy(), stride)  # resized-image pixels
            # resized -> decoded -> original pixels (integer pixel centres throughout)
            # (clipped: the last heatmap cells reach a few resized pixels past the image edge)
            cx = float(np.clip(decode_factor * (qx + 0.5) / fx - 0.5, 0, width * decode_factor - 1))
            cy = float(np.clip(decode_factor * (qy + 0.5) / fy - 0.5, 0, height * decode_factor - 1))
            best = PersonHypothesis(torso_box(cx, cy, torso_px * decode_factor / fy), float(score), fy / decode_factor)
    assert best is not None
    return best


# ---- prediction --------------------------------------------------------------------------------------------------


@dataclass
class PosePrediction:
    """Joints of the person in one photo, in original-image pixels."""

    file: str
    image_size: tuple[int, int]  # (width, height) of the original image
    box: np.ndarray  # (4,) torso box x1, y1, x2, y2
    box_source: str  # "given" (--box) or "search"
    joints: np.ndarray  # (K, 2) (x, y), clipped to the image
    scores: np.ndarray  # (K,) peak score of each joint's map (logit or log-belief; higher is better)
    search_score: float | None = None  # the person search's hypothesis score

    def to_dict(self) -> dict[str, Any]:
        """JSON form: file, image_size, box, box_source, search_score, joints {name: [x, y]}, scores {name: s}."""
        return {
            "file": self.file,
            "image_size": list(self.image_size),
            "box": [round(float(v), 2) for v in self.box],
            "box_source": self.box_source,
            "search_score": None if self.search_score is None else round(self.search_score, 4),
            "joints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(JOINT_NAMES, self.joints)},
            "scores": {n: round(float(s), 4) for n, s in zip(JOINT_NAMES, self.scores)},
        }


@dataclass
class PosePredictor:
    """A loaded pose model with its crop geometry, ready to run on photos."""

    model: PoseModel
    preprocess: PreprocessConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    use_spatial: bool = True  # run the spatial model (if the model has one)
    flip_test: bool = False  # average with the mirrored crop
    search: SearchConfig = field(default_factory=SearchConfig)
    dtype: torch.dtype = torch.float32  # the detector's arithmetic: float32 or bfloat16 (autocast)

    @classmethod
    def from_checkpoint(
        cls, path: Path, device: str = "auto", precision: Precision | str = Precision.auto, **options: Any
    ) -> PosePredictor:
        """Load a checkpoint (its model and crop geometry) onto ``device``; ``options`` set the other fields.

        Raises:
            CnnmrfError: missing or foreign checkpoint, or one without crop geometry.
        """
        model, prep = load_pose(path)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev).dtype
        return cls(model.to(dev), prep, dev, dtype=dtype, **options)

    @property
    def torso_px(self) -> float:
        """Torso-box height in model-input pixels the model was trained on."""
        return self.preprocess.input_size / self.preprocess.crop_scale

    def find_person(self, image: Image.Image, decode_factor: float = 1.0) -> PersonHypothesis:
        """The best person hypothesis in a photo (see :func:`find_person`)."""
        with autocast(self.device, self.dtype):
            return find_person(self.model.detector, image, self.torso_px, decode_factor, self.search, self.device)

    def predict_images(
        self,
        images: Sequence[tuple[Image.Image, float]],
        boxes: Sequence[np.ndarray | None],
        files: Sequence[str] | None = None,
    ) -> list[PosePrediction]:
        """Predict a batch of photos: search a person where no box is given, one forward pass over the crops, then
        for searched photos re-fit the box to the predicted torso (:func:`box_from_joints`) and predict again,
        ``search.refine_steps`` times.

        Args:
            images: (image, decode factor) pairs from :func:`load_image`.
            boxes: one torso box (original pixels) or None (search) per image.
            files: names recorded in the predictions.

        Raises:
            CnnmrfError: a given box lies outside its image.
        """
        files = list(files) if files is not None else [""] * len(images)
        hypotheses: list[PersonHypothesis | None] = []
        current: list[np.ndarray] = []  # the torso box of each image, (4,) original pixels
        sizes: list[tuple[int, int]] = []
        for (image, factor), box in zip(images, boxes, strict=True):
            original = (round(image.size[0] * factor), round(image.size[1] * factor))
            sizes.append(original)
            if box is None:
                hypotheses.append(self.find_person(image, factor))
                current.append(hypotheses[-1].box)
            else:
                check_box(box, original)
                hypotheses.append(None)
                current.append(np.asarray(box, dtype=np.float64))
        final = self._predict_boxes(images, current)
        searched = [i for i, hyp in enumerate(hypotheses) if hyp is not None]
        for _ in range(self.search.refine_steps if searched else 0):
            # The search's scale and position are coarse: re-fit each found box to its predicted torso, predict again.
            for i in searched:
                current[i] = box_from_joints(final.joints[i], current[i], sizes[i])
            again = self._predict_boxes([images[i] for i in searched], [current[i] for i in searched])
            final.joints[searched], final.scores[searched] = again.joints, again.scores
        limits = np.array(sizes, dtype=np.float64)[:, None, :] - 1  # (B, 1, 2)
        joints = np.clip(final.joints, 0, np.maximum(limits, 0))  # (B, K, 2)
        return [
            PosePrediction(
                file, original, box, "given" if hyp is None else "search", j, s, None if hyp is None else hyp.score
            )
            for file, original, box, hyp, j, s in zip(files, sizes, current, hypotheses, joints, final.scores)
        ]

    def _predict_boxes(self, images: Sequence[tuple[Image.Image, float]], boxes: Sequence[np.ndarray]) -> Joints:
        """Crop each image around its torso box and run the model on all crops in one batch."""
        size = self.preprocess.input_size
        crops, transforms = [], []
        for (image, factor), box in zip(images, boxes, strict=True):
            transform = crop_transform(box, size, self.preprocess.crop_scale)  # (2, 3) original -> input
            source, source_factor = _prefiltered(image, factor, transform[0, 0])
            crops.append(render(source, transform, size, source_factor))  # (S, S, 3)
            transforms.append(transform)
        sets = predict_crops(
            self.model,
            np.stack(crops),
            np.stack(transforms),
            self.device,
            use_spatial=self.use_spatial,
            flip_test=self.flip_test,
            dtype=self.dtype,
        )
        return final_joints(sets)

    def predict_image(
        self, image: Image.Image, decode_factor: float = 1.0, box: np.ndarray | None = None, file: str = ""
    ) -> PosePrediction:
        """Predict one decoded photo (person search unless ``box`` is given)."""
        return self.predict_images([(image, decode_factor)], [box], [file])[0]

    def predict_file(
        self, path: Path, box: np.ndarray | None = None, full_resolution: bool = False
    ) -> tuple[PosePrediction, Image.Image]:
        """Predict one image file: read, decode (JPEGs only as finely as the model needs), search or crop, predict.

        Args:
            path: image file (any format PIL reads).
            box: torso box in original pixels, or None to search for the person.
            full_resolution: decode at full size (for drawing) even when a smaller decode would do.

        Returns:
            The prediction and the decoded image.

        Raises:
            CnnmrfError: a missing, unreadable, truncated or absurdly large image, or a box outside it.
        """
        data = read_image_bytes(Path(path))
        target = 1.0
        header = None if full_resolution else peek_size(data)
        if header is not None:
            # min(header): the EXIF orientation may swap the stored axes
            torso = (box[3] - box[1]) if box is not None else self.search.min_fraction * min(header)
            target = self.torso_px / max(float(torso), 1.0)
        image, factor = load_image(data, target)
        return self.predict_image(image, factor, box, str(path)), image


def _prefiltered(image: Image.Image, factor: float, scale: float) -> tuple[Image.Image, float]:
    """Box-filter the image down by an integer factor when the crop shrinks it 2x or more (as a JPEG draft decode
    does for the training crops), so the bilinear crop does not alias. Returns the image and its decode factor."""
    n = int(1.0 / (scale * factor)) if scale * factor < 0.5 else 1  # decoded pixels per model-input pixel
    return (image.reduce(n), factor * n) if n >= 2 else (image, factor)


# ---- outputs -----------------------------------------------------------------------------------------------------


def draw_pose(image: Image.Image, joints: np.ndarray) -> Image.Image:
    """A copy of the image with the skeleton drawn: limbs coloured by side, a dot on every joint.

    Args:
        image: the RGB image at original resolution.
        joints: (K, 2) joints in its pixels.
    """
    out = image.convert("RGB")  # a copy
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 200))  # line thickness grows with the image
    radius = 1.6 * width
    finite = np.isfinite(joints).all(axis=-1)  # (K,)
    limbs = [
        (tuple(joints[a]), tuple(joints[b]), side)
        for (a, b), side in zip(SKELETON, LIMB_SIDES)
        if finite[a] and finite[b]
    ]
    for p, q, _ in limbs:  # dark outlines first, so limbs stand out on any background
        draw.line([p, q], fill=(0, 0, 0), width=width + 2 * max(1, width // 3))
    for p, q, side in limbs:
        draw.line([p, q], fill=SIDE_COLOURS[side], width=width)
    for (x, y), side, ok in zip(joints.tolist(), JOINT_SIDES, finite):
        if ok:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=SIDE_COLOURS[side], outline=(0, 0, 0))
    return out


def output_paths(out: Path, stem: str) -> tuple[Path, Path]:
    """``out/<stem>.json`` and ``out/<stem>_pose.png``."""
    return out / f"{stem}.json", out / f"{stem}_pose.png"


def check_outputs_free(paths: Sequence[Path], force: bool) -> None:
    """Refuse to overwrite existing outputs without ``force``.

    Raises:
        CnnmrfError: one of ``paths`` exists and not ``force``.
    """
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CnnmrfError(f"{' and '.join(existing)} already exist(s); pass --force to overwrite")


def save_outputs(prediction: PosePrediction, image: Image.Image, out: Path, stem: str) -> tuple[Path, Path]:
    """Write ``out/<stem>.json`` (:meth:`PosePrediction.to_dict`) and ``out/<stem>_pose.png`` (the drawn skeleton).

    Args:
        prediction: the prediction.
        image: the photo, at original resolution (decode factor 1).
        out: output folder (created).
        stem: output name stem.
    """
    json_path, png_path = output_paths(Path(out), stem)
    buffer = io.BytesIO()
    draw_pose(image, prediction.joints).save(buffer, format="PNG")
    atomic_write_bytes(png_path, buffer.getvalue())
    atomic_write_bytes(json_path, (json.dumps(prediction.to_dict(), indent=1, allow_nan=False) + "\n").encode())
    return json_path, png_path


def predict_to_files(
    predictor: PosePredictor, path: Path, box: np.ndarray | None, out: Path, stem: str, force: bool = False
) -> tuple[PosePrediction, tuple[Path, Path]]:
    """Predict one image file and write ``out/<stem>.json`` and ``out/<stem>_pose.png`` (skeleton, full resolution).

    Args:
        predictor: the loaded model.
        path: the image file.
        box: torso box in original pixels, or None to search for the person.
        out: output folder.
        stem: output name stem (see :func:`output_stems`).
        force: overwrite existing outputs.

    Returns:
        The prediction and the two files written.

    Raises:
        CnnmrfError: existing outputs without ``force``, or a bad image or box (see :meth:`PosePredictor.predict_file`).
    """
    files = output_paths(Path(out), stem)
    check_outputs_free(files, force)
    prediction, image = predictor.predict_file(path, box, full_resolution=True)
    return prediction, save_outputs(prediction, image, out, stem)
