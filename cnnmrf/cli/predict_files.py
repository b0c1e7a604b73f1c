"""`cnnmrf predict`'s files: the images its arguments name, and the output names it writes, never over someone else's.

Each image gives ``OUT/<stem>.json`` and ``OUT/<stem>_pose.png``. Stems are unique within a run, and a name chosen to
avoid a clash never lands on a file another image's prediction (or anyone else) left in OUT (:func:`output_stems`).
A new run replaces what predict wrote before (recognised by the JSON's ``format``, and the PNG beside such a JSON);
any other file at an output name is replaced only with ``--force`` (:func:`check_replaceable`).
"""

from __future__ import annotations

import glob
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # for annotations only: numpy and torch are imported when the command runs
    import numpy as np

    from cnnmrf.inference.outputs import ImagePrediction
    from cnnmrf.inference.photos import PosePredictor

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Every version of the prediction document starts its "format" so (docs/prediction-format.md).
PREDICTION_FORMAT_PREFIX = "cnnmrf-prediction-v"
# A prediction document is small (a few KB per person); a larger file at an output name is not one.
MAX_PREDICTION_BYTES = 16 * 2**20


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


def output_paths(out: Path, stem: str) -> tuple[Path, Path]:
    """``out/<stem>.json`` and ``out/<stem>_pose.png``."""
    return out / f"{stem}.json", out / f"{stem}_pose.png"


def read_prediction(path: Path) -> dict[str, Any] | None:
    """The prediction document at ``path`` if predict wrote it (a JSON object whose ``format`` is a
    ``cnnmrf-prediction-v*`` version), else None (missing, a folder, unreadable, or anything else)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_PREDICTION_BYTES:
            return None
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    if isinstance(document, dict) and str(document.get("format", "")).startswith(PREDICTION_FORMAT_PREFIX):
        return document
    return None


def _free_for(out: Path, stem: str, image: Path) -> bool:
    """Whether ``stem``'s output names in ``out`` are free, or hold predict's earlier outputs of this same ``image``."""
    json_path, png_path = output_paths(out, stem)
    if not json_path.exists() and not png_path.exists():
        return True
    document = read_prediction(json_path)
    return document is not None and document.get("file") == str(image)


def output_stems(paths: Sequence[Path], out: Path | None = None) -> list[str]:
    """Output name stems, one per path, unique within the run.

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
        return out is None or _free_for(out, stem, path)

    stems = []
    for path in paths:
        stem = path.stem
        if stem.casefold() in taken:
            stem = next(f"{path.stem}-{n}" for n in itertools.count(2) if usable(f"{path.stem}-{n}", path))
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def check_replaceable(files: Sequence[Path], force: bool) -> None:
    """Check that writing ``files`` (an image's JSON, then its PNG) replaces nothing but predict's own earlier outputs,
    unless ``force``: a JSON predict wrote (:func:`read_prediction`) and the PNG beside it. Folders are left to the
    writer, which refuses them.

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
