"""`cnnmrf predict`'s files: the images and videos its arguments name, and the output names it writes, never over
someone else's.

Each image gives ``OUT/<stem>.json`` and ``OUT/<stem>_pose.png``, each video ``OUT/<stem>.jsonl`` and
``OUT/<stem>_pose.mp4`` (:func:`is_video` tells them apart by content). Stems are unique within a run, and a name
chosen to avoid a clash never lands on a file another input's prediction (or anyone else) left in OUT
(:func:`output_stems`). A new run replaces what predict wrote before (recognised by the JSON's ``format``, or the first
line's in JSON Lines, and the PNG or MP4 beside it); any other file at an output name is replaced only with ``--force``
(:func:`check_replaceable`).
"""

from __future__ import annotations

import glob
import itertools
import json
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # for annotations only: numpy and torch are imported when the command runs
    import numpy as np

    from cnnmrf.inference.outputs import ImagePrediction
    from cnnmrf.inference.photos import PosePredictor

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv")
# ISO base media (MP4, MOV) brands of still images (HEIF, AVIF): an "ftyp" box with one of these is not a video.
IMAGE_BRANDS: frozenset[bytes] = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif"})
# Every version of the prediction document starts its "format" so (docs/prediction-format.md).
PREDICTION_FORMAT_PREFIX = "cnnmrf-prediction-v"
# A prediction document is small (a few KB per person); a larger file at an output name is not one.
MAX_PREDICTION_BYTES = 16 * 2**20


def expand_inputs(args: Sequence[str], skip_dir: Path | None = None) -> tuple[list[Path], list[str]]:
    """Turn IMAGE arguments (files, folders, glob patterns) into image and video paths.

    Files are kept as given (even if missing or not images: they fail later, one by one); a folder gives its images and
    videos (by suffix, sorted, not recursive), skipping earlier ``*_pose.png`` and ``*_pose.mp4`` outputs when it is
    ``skip_dir``; a pattern the shell did not expand is expanded here (sorted). Duplicates are dropped, order is kept.

    Returns:
        The paths and one message per argument that yielded nothing (an empty folder, a pattern matching nothing).
    """
    paths: list[Path] = []
    problems: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if skip_dir is not None and path.resolve() == Path(skip_dir).resolve():
                found = [p for p in found if not p.name.endswith(("_pose.png", "_pose.mp4"))]
            if not found:
                problems.append(f"{arg}: no images or videos ({', '.join(suffixes)}) in this folder")
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


def video_signature(head: bytes) -> bool:
    """Whether a file's first 16 bytes are those of a video container: MP4/MOV (an ``ftyp`` box not branded as a still
    image, or a QuickTime ``moov``/``mdat``/``wide`` atom), Matroska/WebM, AVI, FLV, MPEG program stream, Ogg, ASF."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in IMAGE_BRANDS
    return (
        head[4:8] in (b"moov", b"mdat", b"wide")
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV\x01", b"\x00\x00\x01\xba", b"OggS"))
        or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
    )


def is_video(path: Path) -> bool:
    """Whether predict reads ``path`` as a video: by its content where that tells (a video container's signature, or
    an image Pillow opens, whatever the name says: an image renamed ``.mp4`` is an image), else by its suffix (so an
    unreadable ``.mp4`` fails as a video; as does a missing one, or anything but a file, never opened here)."""
    by_name = path.suffix.lower() in VIDEO_SUFFIXES
    try:
        if not path.is_file():
            return by_name
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return by_name
    if video_signature(head):
        return True
    if not by_name:  # neither named nor made like a video: an image, or a file that fails as one
        return False
    from PIL import Image, UnidentifiedImageError  # Pillow: loaded when the command runs

    try:
        with warnings.catch_warnings():  # a huge image is refused later, with its own message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                return False
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return by_name


def output_paths(out: Path, stem: str, video: bool = False) -> tuple[Path, Path]:
    """``out/<stem>.json`` and ``out/<stem>_pose.png``; for a video ``out/<stem>.jsonl`` and ``out/<stem>_pose.mp4``."""
    if video:
        return out / f"{stem}.jsonl", out / f"{stem}_pose.mp4"
    return out / f"{stem}.json", out / f"{stem}_pose.png"


def read_prediction(path: Path) -> dict[str, Any] | None:
    """The prediction document at ``path`` if predict wrote it (a JSON object whose ``format`` is a
    ``cnnmrf-prediction-v*`` version; of a ``.jsonl`` file, its first line), else None (missing, a folder,
    unreadable, or anything else)."""
    try:
        if not path.is_file():
            return None
        if path.suffix == ".jsonl":
            with open(path, "rb") as f:
                document = json.loads(f.readline(MAX_PREDICTION_BYTES))
        elif path.stat().st_size > MAX_PREDICTION_BYTES:
            return None
        else:
            document = json.loads(path.read_bytes())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    if isinstance(document, dict) and str(document.get("format", "")).startswith(PREDICTION_FORMAT_PREFIX):
        return document
    return None


def _free_for(out: Path, stem: str, image: Path, video: bool) -> bool:
    """Whether ``stem``'s output names in ``out`` are free, or hold predict's earlier outputs of this same ``image``."""
    json_path, png_path = output_paths(out, stem, video)
    if not json_path.exists() and not png_path.exists():
        return True
    document = read_prediction(json_path)
    return document is not None and document.get("file") == str(image)


def output_stems(paths: Sequence[Path], out: Path | None = None, videos: Collection[Path] = ()) -> list[str]:
    """Output name stems, one per path (``videos``: those of them read as videos), unique within the run.

    An image gets its file's stem, unless an earlier image of the run took it; then ``<stem>-N`` with the smallest
    N >= 2 that no image of the run has or was given as its own stem (so ``b/p.jpg`` never takes the name of a
    ``p-2.jpg`` given too), and, when ``out`` is given, whose names in ``out`` are free or hold predict's earlier
    outputs of this same image (so a clash never lands on another image's prediction, and the same command run again
    finds the same names). Stems are compared ignoring case, as case-insensitive file systems do.
    """
    own = {path.stem.casefold() for path in paths}
    taken: set[str] = set()

    def usable(stem: str, path: Path) -> bool:
        if stem.casefold() in taken or stem.casefold() in own:
            return False
        return out is None or _free_for(out, stem, path, path in videos)

    stems = []
    for path in paths:
        stem = path.stem
        if stem.casefold() in taken:
            stem = next(f"{path.stem}-{n}" for n in itertools.count(2) if usable(f"{path.stem}-{n}", path))
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def check_replaceable(files: Sequence[Path], force: bool) -> None:
    """Check that writing ``files`` (an image's JSON, then its PNG; a video's JSON Lines, then its MP4) replaces nothing
    but predict's own earlier outputs, unless ``force``: a JSON predict wrote (:func:`read_prediction`) and the file
    beside it. Folders are left to the writer, which refuses them.

    Raises:
        CnnmrfError: another file is at one of the names (naming it, and ``--force``).
    """
    if force:
        return
    json_path = files[0]
    ours = read_prediction(json_path) is not None
    foreign = [f for f in files if f.exists() and not f.is_dir() and not ours]
    if foreign:
        names = " and ".join(str(f) for f in foreign)
        were, them = ("were", "them") if len(foreign) > 1 else ("was", "it")
        raise CnnmrfError(f"{names} {were} not written by cnnmrf predict; pass --force to replace {them}")


def predict_to_files(
    predictor: PosePredictor, path: Path, box: np.ndarray | None, out: Path, stem: str, force: bool = False
) -> tuple[ImagePrediction, tuple[Path, Path]]:
    """Predict one image file and write ``out/<stem>.json`` and ``out/<stem>_pose.png`` (skeletons, full resolution),
    replacing predict's earlier ones (other files there only with ``force``).

    Args:
        predictor: the loaded model.
        path: the image file.
        box: torso box in original pixels, or None to search for people.
        out: output folder.
        stem: output name stem (see :func:`output_stems`).
        force: replace files at the output names that predict did not write.

    Returns:
        The prediction and the two files written.

    Raises:
        CnnmrfError: a file predict did not write is in the way (checked before the work), a bad image or box (see
            :meth:`PosePredictor.predict_file`), or outputs that cannot be written.
    """
    from cnnmrf.inference.outputs import save_prediction

    files = output_paths(Path(out), stem)
    check_replaceable(files, force)
    prediction, image = predictor.predict_file(path, box, full_resolution=True)
    save_prediction(prediction, image, *files)
    return prediction, files
