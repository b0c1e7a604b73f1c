"""`cnnmrf predict` on videos: the video options, and one video's run (its progress bar, JSON Lines on stdout, summary
line); the work is :func:`cnnmrf.inference.video.predict_video`."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnmrf.cli.console import console, err_console, plain, progress_bar
from cnnmrf.cli.predict_files import check_replaceable, output_paths
from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # for annotations only: numpy, torch and av are imported when the command runs
    import numpy as np

    from cnnmrf.inference.photos import PosePredictor
    from cnnmrf.inference.tracking import FramePrediction, VideoOptions
    from cnnmrf.inference.video import VideoInfo, VideoResult

# The defaults of SmoothingConfig and TrackingConfig, repeated here so that --help loads no numpy
# (tests/test_video_cli.py checks that they agree).
SMOOTH_CUTOFF = 0.5
SMOOTH_BETA = 5.0
DETECT_EVERY = 10

EveryOpt = Annotated[
    int,
    typer.Option(
        "--every", help="Videos: predict every Nth frame (the drawn video then has 1/N of the frame rate).", min=1
    ),
]
StartOpt = Annotated[float, typer.Option("--start", help="Videos: begin at this time, in seconds.", min=0.0)]
EndOpt = Annotated[
    float | None, typer.Option("--end", help="Videos: stop at this time, in seconds; default: the end.", min=0.0)
]
SmoothOpt = Annotated[
    bool,
    typer.Option(
        "--smooth/--no-smooth",
        help="Videos: steady each tracked person's joints with the One Euro filter (--no-smooth: each frame's own).",
    ),
]
SmoothCutoffOpt = Annotated[
    float,
    typer.Option(
        "--smooth-cutoff",
        help="Videos: the filter's cutoff frequency for a still joint, Hz (lower: steadier, slower to follow).",
        min=0.01,
    ),
]
SmoothBetaOpt = Annotated[
    float,
    typer.Option(
        "--smooth-beta",
        help="Videos: how fast the cutoff rises with a joint's speed, Hz per torso height per second (higher: less "
        "lag on fast moves).",
        min=0.0,
    ),
]
DetectEveryOpt = Annotated[
    int,
    typer.Option(
        "--detect-every",
        help="Videos: search for people every N predicted frames (and at cuts, or when a person is lost); in "
        "between, each person's box comes from their joints in the previous frame.",
        min=1,
    ),
]


def video_options(
    start: float, end: float | None, every: int, smooth: bool, cutoff: float, beta: float, detect_every: int
) -> VideoOptions:
    """The :class:`VideoOptions` of the command line.

    Raises:
        CnnmrfError: ``--end`` is not after ``--start``.
    """
    from cnnmrf.inference.smoothing import SmoothingConfig
    from cnnmrf.inference.tracking import TrackingConfig, VideoOptions

    if end is not None and end <= start:
        raise CnnmrfError(f"--end {end:g} must be after --start {start:g}")
    smoothing = SmoothingConfig(min_cutoff=cutoff, beta=beta) if smooth else None
    return VideoOptions(start, end, every, TrackingConfig(detect_every=detect_every), smoothing)


def expected_frames(info: VideoInfo, options: VideoOptions) -> int | None:
    """How many frames will be predicted, by the video's header (None when it does not say)."""
    if info.frames is None:
        return None
    rate = float(info.rate)
    first = min(info.frames, math.ceil(options.start * rate - 1e-6))
    last = info.frames if options.end is None else min(info.frames, math.ceil(options.end * rate - 1e-6))
    return max(1, math.ceil(max(0, last - first) / options.every))


def predict_video_file(
    predictor: PosePredictor,
    path: Path,
    box: np.ndarray | None,
    out: Path,
    stem: str,
    force: bool,
    options: VideoOptions,
    json_lines: bool,
) -> VideoResult:
    """Predict one video into ``out/<stem>.jsonl`` and ``out/<stem>_pose.mp4``, showing a progress bar (frames/s, ETA)
    or, with ``json_lines``, printing each frame's document as it is made; then one summary line, and a warning line
    if the video ended early (what was read is kept).

    Raises:
        CnnmrfError: a file predict did not write is in the way (without ``force``), or the video fails
            (:func:`cnnmrf.inference.video.predict_video`); nothing is written then.
    """
    from cnnmrf.inference.video import predict_video

    files = output_paths(out, stem, video=True)
    check_replaceable(files, force)
    label = plain(path.name).replace("{", "{{").replace("}", "}}")  # the bar formats its label
    bar = nullcontext(None) if json_lines else progress_bar(label, transient=True, show_detail=True)
    started = time.perf_counter()
    with bar as on_progress:

        def on_frame(found: FramePrediction, line: str, done: int, info: VideoInfo) -> None:
            if on_progress is None:
                console.print(line, soft_wrap=True, markup=False, emoji=False)
                return
            rate = done / max(time.perf_counter() - started, 1e-9)
            on_progress(done, expected_frames(info, options), f"{rate:.1f} frames/s")

        result = predict_video(predictor, path, files, box, options, on_frame)
    seconds = time.perf_counter() - started
    if result.ended_early:
        err_console.print(
            f"[bold yellow]warning:[/] {plain(path)}: the video ends early ({plain(result.ended_early)}); "
            f"the {result.frames} frame(s) read were predicted",
            soft_wrap=True,
        )
    if not json_lines:
        console.print(
            f"[bold]{plain(path)}[/]: {result.frames} frame(s), a person in {result.with_people}, "
            f"{result.tracks} {'person' if result.tracks == 1 else 'people'} tracked (searched for in "
            f"{result.searches}), {result.frames / max(seconds, 1e-9):.1f} frames/s -> {plain(files[0])}, "
            f"{plain(files[1])}",
            soft_wrap=True,
        )
    return result
