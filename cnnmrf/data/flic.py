"""Read FLIC annotations (``examples.mat``) and images from the distributed folder or ``FLIC.zip``."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnmrf.errors import CnnmrfError
from cnnmrf.joints import ARM_PAIRS, FLIC_COLUMNS, TORSO_PARTS

SAME_PERSON = 0.5  # two annotations of one frame are one person when their joints lie this close (one_box_per_person)

# The most read from one file of a FLIC copy (its JPEGs are ~50 KB, examples.mat ~1 MB): a zip bomb, or a member whose
# header lies about its size, is refused after reading at most this much.
MAX_FILE_BYTES = 64 * 2**20
# What reading a damaged zip member raises besides OSError: bad CRC, truncated or lying streams, unknown compression.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class FlicExample:
    """One annotated person in FLIC."""

    index: int  # 0-based index into examples.mat
    file: str  # image file name inside images/
    torsobox: np.ndarray  # (4,) x1, y1, x2, y2 in original-image pixels
    joints: np.ndarray  # (K, 2) the 10 joints in original-image pixels, raw (person-centric) labels
    split: str  # "train" or "test"


class FlicSource:
    """A FLIC copy: a folder holding ``examples.mat`` and ``images/``, or the ``FLIC.zip`` archive.

    Safe to pickle into worker processes: the zip file is reopened lazily in each process.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CnnmrfError(f"{self.path} does not exist: give the FLIC folder (examples.mat + images/) or FLIC.zip")
        self.is_zip = self.path.is_file()
        self._zip: zipfile.ZipFile | None = None
        if self.is_zip:
            if not zipfile.is_zipfile(self.path):
                raise CnnmrfError(f"{self.path} is neither a folder nor a zip archive")
            try:
                names = self._archive().namelist()
            except (OSError, *_ZIP_ERRORS) as err:
                raise CnnmrfError(f"{self.path} is a damaged zip archive ({err})") from err
            mats = [n for n in names if n.endswith("examples.mat")]
            if not mats:
                raise CnnmrfError(f"{self.path} holds no examples.mat: is it FLIC.zip?")
            self._root = mats[0][: -len("examples.mat")]
        else:
            if not (self.path / "examples.mat").is_file():
                raise CnnmrfError(f"{self.path} holds no examples.mat: give the FLIC folder or FLIC.zip")
            self._root = ""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip

    def read_bytes(self, relative: str) -> bytes:
        """Bytes of a file relative to the FLIC root (e.g. ``images/x.jpg``).

        Raises:
            FileNotFoundError: the file is absent.
            OSError: it cannot be read: a damaged zip member (bad CRC, truncated, a header that lies about its size),
                or more than :data:`MAX_FILE_BYTES` (declared or actual).
        """
        limit = MAX_FILE_BYTES
        if self.is_zip:
            name = self._root + relative
            try:
                info = self._archive().getinfo(name)
            except KeyError as err:
                raise FileNotFoundError(relative) from err
            declared = info.file_size
            try:
                if declared <= limit:
                    with self._archive().open(info) as member:
                        data = member.read(limit + 1)
                    if len(data) != declared:
                        raise zipfile.BadZipFile(f"it holds {len(data)} bytes but its header says {declared}")
            except _ZIP_ERRORS as err:
                raise OSError(f"damaged zip member {name}: {err}") from err
        else:
            with open(self.path / relative, "rb") as f:
                declared = os.fstat(f.fileno()).st_size
                data = f.read(limit + 1) if declared <= limit else b""
        if declared > limit or len(data) > limit:
            raise OSError(f"{relative} holds more than {limit // 2**20} MB, the limit for one file of FLIC")
        return data

    def read_image_bytes(self, file: str) -> bytes:
        """Bytes of one image file of ``images/``."""
        return self.read_bytes(f"images/{file}")

    def examples(self) -> list[FlicExample]:
        """All annotated examples, in examples.mat order."""
        try:
            import scipy.io  # here: 0.1 s to import, and predict never reads examples.mat

            mat = scipy.io.loadmat(io.BytesIO(self.read_bytes("examples.mat")), squeeze_me=True, struct_as_record=False)
            records = np.atleast_1d(mat["examples"])
        except Exception as err:  # scipy raises many types on malformed files
            raise CnnmrfError(f"cannot read examples.mat in {self.path}: {err}") from err
        return [_parse_record(i, record) for i, record in enumerate(records)]


def _parse_record(index: int, record: object) -> FlicExample:
    """Turn one examples.mat struct into a FlicExample."""
    try:
        coords = np.asarray(record.coords, dtype=np.float64)  # (2, 29): x row then y row
        joints9 = coords[:, list(FLIC_COLUMNS)].T  # (9, 2)
        torso = joints9[list(TORSO_PARTS)].mean(axis=0, keepdims=True)  # (1, 2)
        split = "train" if int(record.istrain) else ("test" if int(record.istest) else "none")
        return FlicExample(
            index=index,
            file=str(record.filepath),
            torsobox=np.asarray(record.torsobox, dtype=np.float64).reshape(4),
            joints=np.concatenate([joints9, torso], axis=0),
            split=split,
        )
    except (AttributeError, ValueError, IndexError) as err:
        raise CnnmrfError(f"examples.mat entry {index} is malformed ({err}); is this FLIC's examples.mat?") from err


def observer_centric(joints: np.ndarray, arm_pairs: Sequence[tuple[int, int]] = ARM_PAIRS) -> np.ndarray:
    """Observer-centric copy of joint labels (MODEC's rule).

    When every left arm joint (lsho, lelb, lwri) lies left of (has a smaller x than) its right twin, the
    person faces away from the camera and the arm labels (shoulder, elbow, wrist) are swapped, so that
    "left" always means the image-right side as for a person facing the camera. Any other configuration
    (including mixed cases and NaN coordinates) is left unchanged; hips, nose and torso are never touched.

    Args:
        joints: (N, K, 2) or (K, 2) labels, (x, y).
        arm_pairs: (left, right) joint index pairs to compare and swap.

    Returns:
        A new array of the same shape and dtype.
    """
    j = np.asarray(joints)
    if j.ndim not in (2, 3) or j.shape[-1] != 2:
        raise ValueError(f"joints must have shape (N, K, 2) or (K, 2); got {j.shape}")
    left = [a for a, _ in arm_pairs]
    right = [b for _, b in arm_pairs]
    with np.errstate(invalid="ignore"):
        away = np.all(j[..., left, 0] < j[..., right, 0], axis=-1)  # (N,) or ()
    out = j.copy()
    mask = np.asarray(away)[..., None, None]
    out[..., left, :] = np.where(mask, j[..., right, :], j[..., left, :])
    out[..., right, :] = np.where(mask, j[..., left, :], j[..., right, :])
    return out


def one_box_per_person(boxes: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame's annotations, one per person: FLIC annotates some people twice in one frame (391 pairs of its 4,554
    annotated frames), with the same joints and torso boxes of heights about 1.45x apart, the smaller one below
    and the larger one above the usual box-to-torso proportion. A pair (mean joint distance under
    :data:`SAME_PERSON` of the smaller box's height; FLIC's pairs lie under 0.3, distinct people over 1) becomes one
    person: the mean centre and the geometric-mean height (aspect kept), the first annotation's joints.

    Shapes: boxes (P, 4), joints (P, K, 2) -> boxes (G, 4), joints (G, K, 2), G <= P, in first-appearance order.
    """
    boxes, joints = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(joints, dtype=np.float64)
    heights = boxes[:, 3] - boxes[:, 1]  # (P,)
    gap = np.nanmean(np.linalg.norm(joints[:, None] - joints[None], axis=-1), axis=-1)  # (P, P) mean joint distance
    same = gap < SAME_PERSON * np.minimum(heights[:, None], heights[None])  # (P, P)
    first = np.argmax(same, axis=1)  # (P,) each annotation's person: the first annotation it matches
    people = list(dict.fromkeys(first.tolist()))  # (G,) the first annotation of each person
    merged = []
    for person in people:
        mine = boxes[first == person]  # (M, 4)
        if len(mine) == 1:  # annotated once: as annotated
            merged.append(mine[0])
            continue
        centre = (mine[:, :2] + mine[:, 2:]).mean(axis=0) / 2  # (2,)
        height = float(np.exp(np.log(mine[:, 3] - mine[:, 1]).mean()))
        width = height * float(np.exp(np.log((mine[:, 2] - mine[:, 0]) / (mine[:, 3] - mine[:, 1])).mean()))
        merged.append(
            np.array([centre[0] - width / 2, centre[1] - height / 2, centre[0] + width / 2, centre[1] + height / 2])
        )
    return np.asarray(merged).reshape(-1, 4), joints[people]
