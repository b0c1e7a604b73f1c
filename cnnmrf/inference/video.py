"""Videos in and out with PyAV (FFmpeg): frames decoded one at a time (upright, RGB), skeleton videos encoded as H.264,
and a video's two outputs (the frames' JSON Lines and the drawn video) streamed to temporaries renamed together."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np
from PIL import Image

from cnnmrf.data.images import size_problem
from cnnmrf.errors import CnnmrfError
from cnnmrf.files import atomic_path, write_error, written_together
from cnnmrf.inference.drawing import draw_pose
from cnnmrf.inference.photos import PosePredictor
from cnnmrf.inference.tracking import FramePrediction, PoseTracker, VideoOptions, VideoPoses
from cnnmrf.interrupts import check_interrupted
from cnnmrf.joints import JOINT_NAMES

DEFAULT_RATE = Fraction(25)  # frames per second assumed for a stream that declares none
# H.264 in MP4, as every player reads it: yuv420p, veryfast (3 ms a 720x480 frame on a Zen 4 core), quality 20, one
# thread (x264's own threads ran beside the model's and slowed it: 6.5 against 7.2 s for bench/video.py's clip).
ENCODER_OPTIONS: dict[str, str] = {"preset": "veryfast", "crf": "20", "threads": "1"}
# A frame's display rotation (degrees counter-clockwise, FFmpeg's display matrix) -> the PIL turn that makes it upright.
_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@dataclass
class Frame:
    """One decoded frame: its number in the video (0 for the first decoded frame), its time in seconds from the first
    frame, and the upright RGB picture."""

    number: int
    time: float
    image: Image.Image


@dataclass
class VideoInfo:
    """What a video's header says of its first video stream."""

    size: tuple[int, int]  # (width, height) as stored (before any display rotation)
    rate: Fraction  # frames per second (the stream's average rate; DEFAULT_RATE if it declares none)
    frames: int | None  # how many frames it holds: counted by the container, or estimated from its duration; or None
    exact: bool  # whether ``frames`` was counted by the container (MP4, AVI) rather than estimated (Matroska)
    duration: float | None  # seconds, or None when the header does not say


@dataclass
class VideoReader:
    """An open video, decoded frame by frame (:meth:`frames`); damaged packets are skipped and counted, so one bad spot
    never loses the rest."""

    container: av.container.InputContainer
    info: VideoInfo
    decoded: int = 0  # frames decoded so far
    damaged: int = 0  # packets that failed to decode (skipped)
    cut_short: str = ""  # why reading stopped before the container's end ("" if it did not)
    stopped_at_end: bool = False  # reading stopped at --end, before the video's end
    _origin: int | None = field(default=None, repr=False)  # the stream's first timestamp

    @property
    def stream(self) -> av.video.stream.VideoStream:
        """The video stream read."""
        return self.container.streams.video[0]

    def frames(self, start: float = 0.0, end: float | None = None, every: int = 1) -> Iterator[Frame]:
        """The frames whose time is in [start, end), every ``every``-th of them (the first at or after ``start``,
        then every ``every`` frames), decoded in order; frames in between are decoded but not converted."""
        selected = 0
        for frame in self._decoded():
            number, time = self.decoded - 1, self._time(frame)
            if time < start - 1e-6:
                continue
            if end is not None and time >= end - 1e-6:
                self.stopped_at_end = True
                return
            if selected % every == 0:
                yield Frame(number, time, upright(frame))
            selected += 1

    def _time(self, frame: av.VideoFrame) -> float:
        """Seconds from the stream's start: by the frame's timestamp, or its number at the frame rate if it has none."""
        if frame.pts is None or frame.time_base is None:
            return (self.decoded - 1) / float(self.info.rate)
        if self._origin is None:
            start = self.stream.start_time
            self._origin = start if start is not None and start <= frame.pts else frame.pts
        return max(0.0, float((frame.pts - self._origin) * frame.time_base))

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every frame of the stream, in presentation order, skipping packets that do not decode."""
        stream = self.stream
        packets = self.container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as err:  # the container itself is damaged or truncated here
                self.cut_short = reason(err)
                packet = None
            for frame in self._decode(packet):  # None: flush what the decoder holds
                self.decoded += 1
                yield frame
            if packet is None:
                return

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        """The frames a packet completes (None: the decoder's last ones); none if it fails to decode (counted)."""
        try:
            return list(self.stream.decode(packet))
        except av.error.FFmpegError:
            self.damaged += 1
            return []

    def ended_early(self) -> str:
        """Why fewer frames were read than the video holds, in a few words ("" if it was read to its end, or to
        ``--end``): damaged packets skipped, a container cut short, fewer frames than the header announces."""
        if self.stopped_at_end:
            return ""
        problems = []
        if self.damaged:
            problems.append(f"{self.damaged} damaged packet(s) skipped")
        if self.cut_short:
            problems.append(f"unreadable after frame {self.decoded} ({self.cut_short})")
        expected = self.info.frames
        if expected and (self.decoded < expected if self.info.exact else self.decoded < 0.95 * expected - 1):
            announced = "announces" if self.info.exact else "implies"
            problems.append(f"{self.decoded} of the {expected} frames its header {announced} decoded")
        return "; ".join(problems)


def reason(err: Exception) -> str:
    """FFmpeg's words for an error, without the errno and the file name PyAV adds."""
    text = getattr(err, "strerror", None) or str(err)
    return str(text).strip().rstrip(".").lower() or type(err).__name__


def upright(frame: av.VideoFrame) -> Image.Image:
    """The frame as an RGB picture, turned upright as its display rotation says (as players show phone videos)."""
    image = frame.to_image()
    turn = _TURNS.get(round(frame.rotation or 0) % 360)
    return image.transpose(turn) if turn is not None else image


@contextmanager
def open_video(path: Path) -> Iterator[VideoReader]:
    """Open a video file for :meth:`VideoReader.frames` (its first video stream; decoding on several threads).

    Raises:
        CnnmrfError: missing, empty, not a video FFmpeg reads, no video stream, or frames of a size predict refuses
            (:func:`cnnmrf.data.images.size_problem`).
    """
    path = Path(path)
    if not path.exists():
        raise CnnmrfError("no such file")
    if not path.is_file():
        raise CnnmrfError("not a file")
    if path.stat().st_size == 0:
        raise CnnmrfError("an empty file (0 bytes), not a video")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise CnnmrfError(f"not a readable video ({reason(err)})") from err
    except OSError as err:
        raise CnnmrfError(f"cannot read it ({err.strerror or err})") from err
    try:
        yield VideoReader(container, video_info(container))
    finally:
        container.close()


def video_info(container: av.container.InputContainer) -> VideoInfo:
    """The header's facts on the container's first video stream.

    Raises:
        CnnmrfError: it has no video stream, or its frames have no size or one predict refuses.
    """
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        holds = f" (it holds {' and '.join(kinds)})" if kinds else ""
        raise CnnmrfError(f"no video stream in this file{holds}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the model
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise CnnmrfError("not a readable video (its video stream has no frame size)")
    problem = size_problem(width, height)
    if problem:
        raise CnnmrfError(problem.replace("image is", "frames are", 1))
    rate = stream.average_rate or stream.guessed_rate or DEFAULT_RATE
    rate = Fraction(rate) if rate > 0 else DEFAULT_RATE
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    frames, exact = (stream.frames, True) if stream.frames > 0 else (None, False)
    if frames is None and duration is not None:
        frames = round(duration * float(rate))
    return VideoInfo((width, height), rate, frames, exact, duration)


class VideoWriter:
    """An H.264 MP4 (libx264; MPEG-4 part 2 where FFmpeg lacks it) written frame by frame at a constant rate; odd
    sides are padded by one pixel (4:2:0 colour needs even ones)."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction) -> None:
        self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        self.count = 0
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(path), "w", format="mp4")
        try:
            options = ENCODER_OPTIONS if codec == "libx264" else {}
            self.stream = self.container.add_stream(codec, rate=rate, options=options)
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = "yuv420p"
        except BaseException:
            self.container.close()
            raise

    def write(self, image: Image.Image) -> None:
        """Encode one RGB picture of the writer's size (before padding) as the next frame."""
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # (H, W, 3)
        height, width = self.size[1], self.size[0]
        if pixels.shape[:2] != (height, width):
            pixels = np.pad(pixels, ((0, height - pixels.shape[0]), (0, width - pixels.shape[1]), (0, 0)), "edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame.pts = self.count
        self.count += 1
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()

    def abort(self) -> None:
        """Close the file without finishing it (it is being thrown away)."""
        with suppress(Exception):  # the failure that got here is the one to report
            self.container.close()


@dataclass
class VideoOutputs:
    """A video's two outputs as they are written, into temporaries: JSON Lines and the drawn video."""

    lines: IO[str]  # the frames' prediction documents, one per line
    video: VideoWriter  # the frames with their skeletons drawn
    names: tuple[Path, Path]  # the two files they become (named in errors)

    def add(self, line: str, image: Image.Image) -> None:
        """Write one frame's document (one line of JSON) and its drawn picture.

        Raises:
            CnnmrfError: a file cannot be written (disk full), naming it.
        """
        with _naming(self.names[1]):
            self.video.write(image)
        with _naming(self.names[0]):
            self.lines.write(line + "\n")


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """Turn an OSError met in the block into the one-line error of writing ``target``."""
    try:
        yield
    except OSError as err:
        raise write_error(target, err) from err


@contextmanager
def video_outputs(json_path: Path, video_path: Path, size: tuple[int, int], rate: Fraction) -> Iterator[VideoOutputs]:
    """Write a video's JSON Lines and drawn video as one pair: both stream into temporaries beside their names, flushed
    to disk, then renamed together when the block ends; if it fails (a bad frame, a full disk, Ctrl-C) both
    temporaries are removed and nothing is replaced (:func:`cnnmrf.files.written_together`).

    Raises:
        CnnmrfError: a name is a folder, or a file cannot be written (disk full, permissions), naming it.
    """
    with written_together(), atomic_path(json_path) as json_tmp, atomic_path(video_path) as video_tmp:
        with _naming(video_path):
            writer = VideoWriter(video_tmp, size, rate)
        try:
            with open(json_tmp, "w", encoding="utf-8") as lines:
                yield VideoOutputs(lines, writer, (json_path, video_path))
                with _naming(json_path):
                    lines.flush()
                    os.fsync(lines.fileno())
        except BaseException:
            writer.abort()
            raise
        with _naming(video_path):
            writer.close()
            with open(video_tmp, "rb+") as f:
                os.fsync(f.fileno())


@dataclass
class VideoResult:
    """What predicting a video did."""

    frames: int  # frames predicted (lines written, frames drawn)
    with_people: int  # frames with at least one person
    tracks: int  # people followed (distinct track ids)
    searches: int  # frames the person search ran on
    ended_early: str  # why the video was read short of its end, or ""


def predict_video(
    predictor: PosePredictor,
    path: Path,
    files: tuple[Path, Path],
    box: np.ndarray | None = None,
    options: VideoOptions | None = None,
    on_frame: Callable[[FramePrediction, str, int, VideoInfo], None] | None = None,
) -> VideoResult:
    """Predict a video's frames one at a time and write ``files``: JSON Lines, one document per predicted frame
    (:meth:`FramePrediction.to_dict`), and the frames with their skeletons drawn (H.264 MP4, the source's size and
    frame rate / ``every``), as one pair (:func:`video_outputs`). Memory does not grow with the video's length.

    Args:
        predictor: the loaded model (its person search, threshold and people cap).
        path: the video file.
        files: the JSON Lines and MP4 files to write.
        box: the one person's torso box in the first predicted frame (then followed), or None to search.
        options: frames, tracking and smoothing (default :class:`VideoOptions`).
        on_frame: called after each frame is written, with its prediction, its JSON line, the number of frames done
            and the header.

    Raises:
        CnnmrfError: an unreadable video (:func:`open_video`), no frame read, a box outside the frame, non-finite
            joints, or outputs that cannot be written; nothing is written then.
    """
    options = options or VideoOptions()
    with open_video(path) as reader, ExitStack() as stack:
        tracker = PoseTracker(predictor, options.tracking, box)
        poses = VideoPoses(tracker, options.smoothing, str(path))
        outputs: VideoOutputs | None = None
        done = with_people = 0
        tracks: set[int] = set()
        for frame in reader.frames(options.start, options.end, options.every):
            check_interrupted()
            found = poses.predict(frame.image, frame.number, frame.time)
            try:
                line = json.dumps(found.to_dict(), allow_nan=False)
            except ValueError as err:
                raise CnnmrfError(
                    f"the model predicted non-finite joints (NaN or infinity) in frame {frame.number}; "
                    "is the checkpoint damaged?"
                ) from err
            if outputs is None:
                size, rate = frame.image.size, reader.info.rate / options.every
                outputs = stack.enter_context(video_outputs(*files, size, rate))
            joints = np.array([p.joints for p in found.prediction.people]).reshape(-1, len(JOINT_NAMES), 2)
            drawn = draw_pose(frame.image, joints)  # (P, K, 2) joints
            if drawn.size != size:
                drawn = drawn.resize(size)  # a stream whose frames change size: drawn at the first one's
            outputs.add(line, drawn)
            done += 1
            with_people += bool(found.tracks)
            tracks.update(found.tracks)
            if on_frame is not None:
                on_frame(found, line, done, reader.info)
        if outputs is None:
            raise CnnmrfError(no_frame(reader, options))
        return VideoResult(done, with_people, len(tracks), tracker.searches, reader.ended_early())


def no_frame(reader: VideoReader, options: VideoOptions) -> str:
    """Why no frame was predicted: nothing decoded (damaged, truncated, empty), or none in the chosen times."""
    if reader.decoded == 0:
        why = reader.ended_early() or "it holds no frames"
        return f"no frame could be decoded: {why}"
    duration = reader.info.duration
    length = f" (the video is {duration:.2f} s long)" if duration is not None else ""
    end = "its end" if options.end is None else f"--end {options.end:g} s"
    return f"no frame between --start {options.start:g} s and {end}{length}"
