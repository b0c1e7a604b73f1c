"""People followed through a video: the person search on some frames, in between each person's torso box taken from
their previous frame's joints (as MediaPipe does) and predicted once; track ids, and the frame's prediction document."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from cnnmrf.data.geometry import box_problem
from cnnmrf.inference.crops import Joints
from cnnmrf.inference.outputs import ImagePrediction, Person
from cnnmrf.inference.photos import PosePredictor, check_box
from cnnmrf.inference.proposals import Photo
from cnnmrf.inference.search import Proposal, box_from_joints, merge_people
from cnnmrf.inference.smoothing import JointSmoother, SmoothingConfig
from cnnmrf.inference.topdown import Candidates

THUMBNAIL = (64, 36)  # (width, height) of the greyscale thumbnails compared to find shot changes


@dataclass(frozen=True)
class TrackingConfig:
    """When the person search runs on a video's frames, and how the people it finds continue tracks."""

    # The search (0.17 s a 720x480 FLIC frame with the person detector, 0.6 s with the scan, on one Zen 4 core) runs
    # on the first frame and every detect_every-th predicted frame after it; a tracked frame costs one pass of the pose
    # model per person (about 0.05 s each).
    detect_every: int = 10  # predicted frames between searches, at most (1: search every frame)
    # On bench/video.py's FLIC clip, frames 10-40 film frames apart differ by at most 0.05, and 8 of the 17 gaps of
    # 50 film frames or more (mostly cuts) by more than 0.1; cuts below that are caught by the people's scores falling.
    shot_change: float = 0.1  # thumbnails differing more than this (mean absolute grey level, 0-1): a cut, tracks end
    # A found person continues the track whose predicted torso box is centred nearest theirs, within this many torso
    # heights (the larger box's): side by side, two people's torso boxes are at least 2/3 of a height apart.
    match_distance: float = 0.5

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {self.detect_every}")


@dataclass(frozen=True)
class VideoOptions:
    """Which frames of a video are predicted, and how people are followed and their joints steadied."""

    start: float = 0.0  # seconds: frames before this are skipped
    end: float | None = None  # seconds: frames at or after this are not read (None: to the video's end)
    every: int = 1  # predict every this-many-th frame from start (the drawn video then has 1 / every of the rate)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # when the person search runs
    smoothing: SmoothingConfig | None = field(default_factory=SmoothingConfig)  # the joints' filter (None: raw)


@dataclass
class Track:
    """A person followed from frame to frame."""

    id: int  # the track's number in its video, from 0
    box: np.ndarray  # (4,) torso box in the last frame, original pixels
    joints: np.ndarray  # (K, 2) the joints predicted in the last frame (before smoothing), original pixels


@dataclass
class FramePrediction:
    """One video frame's people, each with a track id: the per-frame document of ``predict``'s JSON Lines."""

    prediction: ImagePrediction  # the people, likeliest first, as for a photo
    frame: int  # the frame's number in the video, 0 for the first
    time: float  # seconds from the first frame
    tracks: list[int]  # (P,) the track id of each person

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the photo document (:meth:`ImagePrediction.to_dict`) with ``frame`` and ``time`` after ``file``
        and a ``track`` id first in each person."""
        document = self.prediction.to_dict()
        people = [{"track": track, **person} for track, person in zip(self.tracks, document.pop("people"), strict=True)]
        head = {"format": document.pop("format"), "file": document.pop("file")}
        return {**head, "frame": self.frame, "time": round(self.time, 4), **document, "people": people}


def box_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between the centres of every box in ``a`` and every box in ``b``, in heights of the taller of the two.

    Shapes: a (N, 4), b (M, 4) as x1, y1, x2, y2 -> (N, M).
    """
    centre_a, centre_b = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2  # (N, 2), (M, 2)
    height = np.maximum(a[:, 3:4] - a[:, 1:2], (b[:, 3] - b[:, 1])[None])  # (N, M)
    return np.linalg.norm(centre_a[:, None] - centre_b[None], axis=-1) / np.maximum(height, 1e-6)


def joined(a: Candidates, b: Candidates, faces: np.ndarray) -> Candidates:
    """One photo's candidates from two sources as one set, all of photo 0, with the (M, 4) ``faces`` found in it."""
    if not a.proposals or not b.proposals:
        sets = a.sets if a.proposals else b.sets
    else:
        sets = {name: Joints(*(np.concatenate(pair) for pair in zip(a.sets[name], b.sets[name]))) for name in a.sets}
    count = len(a.proposals) + len(b.proposals)
    boxes = np.concatenate([a.boxes.reshape(-1, 4), b.boxes.reshape(-1, 4)])  # (N, 4)
    return Candidates(np.zeros(count, dtype=np.int64), a.proposals + b.proposals, boxes, sets, [faces] * count)


def thumbnail(image: Image.Image) -> np.ndarray:
    """(36, 64) greyscale thumbnail of a frame in [0, 1], for :attr:`TrackingConfig.shot_change`."""
    return np.asarray(image.convert("L").resize(THUMBNAIL, Image.BILINEAR), dtype=np.float32) / 255.0


@dataclass
class PoseTracker:
    """Finds and follows the people of a video's frames, given one at a time (:meth:`step`).

    The predictor's person search (whatever it is configured with) runs on the first frame, every
    ``config.detect_every`` frames, after a shot change and whenever a tracked person is lost; the tracks, predicted
    in their boxes from their last joints, are verified beside its proposals, and the people it reports continue the
    tracks whose boxes are nearest theirs. In
    between, each track's torso box comes from its previous joints (:func:`box_from_joints`) and is predicted once
    (no re-fit, no face search) and scored; a person scored below the predictor's threshold, or merged with a likelier
    one, is lost. With a given ``box`` there is one person, started in that box and followed, never searched for nor
    dropped.
    """

    predictor: PosePredictor
    config: TrackingConfig = field(default_factory=TrackingConfig)
    box: np.ndarray | None = None  # (4,) the one person's torso box in the first frame (None: search)
    tracks: list[Track] = field(default_factory=list)
    searches: int = 0  # frames the person search ran on
    _next_id: int = 0
    _since_search: int = 0
    _thumbnail: np.ndarray | None = None

    def step(self, image: Image.Image) -> tuple[list[Person], list[int], bool]:
        """The people in the next frame (likeliest first), their track ids, and whether the search ran."""
        self._since_search += 1
        if self.box is not None:
            people = self._given(image)
            return people, [track.id for track in self.tracks], False
        small = thumbnail(image)
        cut = self._thumbnail is not None and float(np.abs(small - self._thumbnail).mean()) > self.config.shot_change
        self._thumbnail = small
        if cut:
            self.tracks = []  # another shot: nobody continues
        tracked = None
        if self.tracks and self._since_search < self.config.detect_every:
            people, tracked = self._follow(image)
            if people is not None:
                return people, [track.id for track in self.tracks], False
        return self._search(image, tracked), [track.id for track in self.tracks], True

    def _predicted_boxes(self, size: tuple[int, int]) -> list[np.ndarray]:
        """(4,) torso box of each track in a new frame of ``size``: from its last joints (the box is kept if those
        give an unusable one)."""
        boxes = [box_from_joints(track.joints, track.box, size) for track in self.tracks]
        return [box if not box_problem(box, size) else track.box for box, track in zip(boxes, self.tracks)]

    def _tracked(self, image: Image.Image) -> Candidates | None:
        """Each track predicted once in its box from its last joints (no re-fit, no faces): one candidate each, each
        its own photo; None without tracks, or if a box cannot be used."""
        boxes = self._predicted_boxes(image.size)
        if not boxes or any(box_problem(box, image.size) for box in boxes):
            return None
        return self.predictor.top_down.candidates(
            [Photo(image)] * len(boxes), [[Proposal(box, 0.0, "track")] for box in boxes]
        )

    def _follow(self, image: Image.Image, given: bool = False) -> tuple[list[Person] | None, Candidates | None]:
        """Each track in its box from its last joints, scored alone against the threshold (``given``: never dropped).

        Returns:
            The people (None if a track is lost, or two merge into one) and the tracks' candidates (None if a box
            could not be used), which a search of the same frame then reuses.
        """
        found = self._tracked(image)
        if found is None:
            return None, None
        count = len(found.proposals)
        people = self.predictor.people(found, [given] * count, [image.size] * count)
        if any(not mine for mine in people):
            return None, found
        flat = [mine[0] for mine in people]
        rank = np.array([p.score if p.score is not None else 0.0 for p in flat])
        kept = merge_people(np.stack([p.box for p in flat]), rank, self.predictor.search)
        if len(kept) < len(flat) and not given:
            return None, found  # two tracks on one person: the search sorts them out
        kept = kept[: self.predictor.max_people]
        self.tracks = [Track(self.tracks[i].id, flat[i].box, flat[i].joints) for i in kept]
        return [flat[i] for i in kept], found

    def _given(self, image: Image.Image) -> list[Person]:
        """The one person of a given box: predicted in it on the first frame, then followed (from the given box again
        should their joints give no usable box)."""
        if self.tracks:
            people, _ = self._follow(image, given=True)
            if people:
                return people
        assert self.box is not None
        check_box(self.box, image.size)
        photo = Photo(image)
        found = self.predictor.top_down.candidates([photo], [[Proposal(self.box, 0.0, "given")]])
        people = self.predictor.people(found, [True], [image.size])[0]
        track = self.tracks[0].id if self.tracks else self._new_id()
        self.tracks = [Track(track, person.box, person.joints) for person in people]
        return people

    def _search(self, image: Image.Image, tracked: Candidates | None = None) -> list[Person]:
        """The predictor's person search (its proposals re-fitted), with the tracks' candidates (``tracked``, else
        predicted here) verified beside them; the people found continue the tracks whose boxes are nearest
        (:attr:`TrackingConfig.match_distance`; greedily, nearest first), or start new ones."""
        size = image.size
        predicted = self._predicted_boxes(size)
        photo = self.predictor.photo(image)
        found = self.predictor.top_down.candidates([photo], [self.predictor.person_search.propose(photo)])
        tracked = tracked if tracked is not None or not self.tracks else self._tracked(image)
        if tracked is not None:
            found = joined(found, tracked, photo.faces)
        people = self.predictor.people(found, [False], [size])[0]
        ids: list[int | None] = [None] * len(people)
        if people and predicted:
            distance = box_distances(np.stack([p.box for p in people]), np.stack(predicted))  # (P, T)
            used: set[int] = set()
            for flat in np.argsort(distance, axis=None, kind="stable"):
                person, track = divmod(int(flat), len(predicted))
                if distance[person, track] > self.config.match_distance:
                    break
                if ids[person] is None and track not in used:
                    ids[person] = self.tracks[track].id
                    used.add(track)
        self.tracks = [
            Track(self._new_id() if track is None else track, person.box, person.joints)
            for person, track in zip(people, ids)
        ]
        self.searches += 1
        self._since_search = 0
        return people

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1


@dataclass
class VideoPoses:
    """A video's frames to prediction documents: tracked people (:class:`PoseTracker`), their joints smoothed per
    track (:class:`JointSmoother`; None: raw) and clipped to the frame."""

    tracker: PoseTracker
    smoothing: SmoothingConfig | None = field(default_factory=SmoothingConfig)
    file: str = ""  # the video, as recorded in each document
    _smoother: JointSmoother | None = None

    def __post_init__(self) -> None:
        self._smoother = JointSmoother(self.smoothing) if self.smoothing is not None else None

    def predict(self, image: Image.Image, frame: int, time: float) -> FramePrediction:
        """The prediction document of one frame (the frames given in order)."""
        people, tracks, _ = self.tracker.step(image)
        if self._smoother is not None and people:
            heights = np.array([p.box[3] - p.box[1] for p in people])  # (P,)
            raw = np.stack([p.joints for p in people])  # (P, K, 2)
            limit = np.maximum(np.asarray(image.size, dtype=np.float64) - 1, 0)  # (2,)
            steady = np.clip(self._smoother.smooth(tracks, raw, heights, time), 0, limit)  # (P, K, 2)
            people = [replace(person, joints=joints) for person, joints in zip(people, steady)]
        elif self._smoother is not None:
            self._smoother.smooth([], np.zeros((0, 0, 2)), np.zeros(0), time)  # nobody: every state is forgotten
        predictor = self.tracker.predictor
        prediction = ImagePrediction(self.file, image.size, people, predictor.precision, predictor.search_name)
        return FramePrediction(prediction, frame, time, tracks)
