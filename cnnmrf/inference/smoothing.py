"""Steady joints through a video: the One Euro filter (Casiez, Roussel & Vogel, CHI 2012) on every tracked joint,
vectorised over people and joints, its speed measured in torso heights per second so one setting suits every
resolution and distance from the camera."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingConfig:
    """The One Euro filter's settings: a low cutoff frequency for a still joint (no jitter), rising with its speed (no
    lag when it moves).

    Chosen with ``bench/video.py``'s FLIC footage (docs/performance.md, "Video"): on its 40-frame clip at 24 frames/s
    (consecutive FLIC frames: a jump every frame) arms PCK@0.2 is 95.2 against 95.8 for the raw joints (one joint of
    168; 89.9 at beta 2, 88.7 at 1; 95.8 at the film's own pace, 2.4 frames/s, from beta 1), while a still person's
    jitter falls from 1.18 to 0.31 pixels a frame (0.38 at cutoff 1, 0.28 at 0.3).
    """

    min_cutoff: float = 0.5  # Hz: the cutoff of a still joint (lower: steadier, but slower to start moving)
    beta: float = 5.0  # Hz per (torso height per second) of the joint's speed: how fast the cutoff rises with it
    speed_cutoff: float = 1.0  # Hz: the cutoff of the speed estimate itself (the paper's default)

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.speed_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"cutoffs must be positive and beta non-negative, not {self}")


def smoothing_factor(cutoff: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    """The exponential smoothing factor of a first-order low-pass filter at ``cutoff`` Hz over ``dt`` seconds:
    ``1 / (1 + tau / dt)`` with ``tau = 1 / (2 pi cutoff)`` (1: the new value alone, 0: the old one). Broadcasts."""
    rate = 2.0 * np.pi * np.asarray(cutoff, dtype=np.float64) * np.asarray(dt, dtype=np.float64)
    return rate / (rate + 1.0)


def one_euro_step(
    joints: np.ndarray,
    previous: np.ndarray,
    previous_speed: np.ndarray,
    dt: np.ndarray,
    scale: np.ndarray,
    config: SmoothingConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the One Euro filter for P people's K joints at once.

    Args:
        joints: (P, K, 2) the new raw joints, pixels.
        previous: (P, K, 2) the filtered joints of the previous step.
        previous_speed: (P, K, 2) the filtered velocity of the previous step, pixels per second.
        dt: (P,) seconds since the previous step (> 0).
        scale: (P,) each person's torso height, pixels: speeds are compared with the config in torso heights per
            second.
        config: the filter's settings.

    Returns:
        The (P, K, 2) filtered joints and (P, K, 2) filtered velocity.
    """
    dt = np.asarray(dt, dtype=np.float64)[:, None, None]  # (P, 1, 1)
    velocity = (joints - previous) / dt  # (P, K, 2)
    speed_alpha = smoothing_factor(config.speed_cutoff, dt)  # (P, 1, 1)
    speed = speed_alpha * velocity + (1.0 - speed_alpha) * previous_speed  # (P, K, 2)
    relative = np.linalg.norm(speed, axis=-1) / np.maximum(np.asarray(scale, dtype=np.float64), 1e-6)[:, None]
    cutoff = config.min_cutoff + config.beta * relative  # (P, K)
    alpha = smoothing_factor(cutoff[..., None], dt)  # (P, K, 1)
    return alpha * joints + (1.0 - alpha) * previous, speed


@dataclass
class _State:
    """One track's filter state: its filtered joints and velocity, and when they were filtered."""

    joints: np.ndarray  # (K, 2) pixels
    speed: np.ndarray  # (K, 2) pixels per second
    time: float  # seconds


class JointSmoother:
    """The One Euro filter on every tracked person's joints: each track id keeps its own state; a new track starts
    from its raw joints, and the state of a track that is not seen in a frame is forgotten (memory stays flat)."""

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        self._states: dict[int, _State] = {}

    def smooth(self, tracks: Sequence[int], joints: np.ndarray, scale: np.ndarray, time: float) -> np.ndarray:
        """Filter one frame's people.

        Args:
            tracks: (P,) the track id of each person (distinct).
            joints: (P, K, 2) their raw joints, pixels.
            scale: (P,) their torso heights, pixels.
            time: the frame's time, seconds (increasing from frame to frame).

        Returns:
            (P, K, 2) the filtered joints (a new track's: its raw joints).
        """
        joints = np.asarray(joints, dtype=np.float64)
        out = joints.copy()
        known = [i for i, track in enumerate(tracks) if track in self._states and time > self._states[track].time]
        if known:
            states = [self._states[tracks[i]] for i in known]
            filtered, speed = one_euro_step(
                joints[known],
                np.stack([s.joints for s in states]),
                np.stack([s.speed for s in states]),
                np.array([time - s.time for s in states]),
                np.asarray(scale, dtype=np.float64)[known],
                self.config,
            )
            out[known] = filtered
        else:
            speed = np.zeros((0, *joints.shape[1:]))
        velocities = dict(zip(known, speed))
        self._states = {
            track: _State(out[i], velocities.get(i, np.zeros_like(out[i])), time) for i, track in enumerate(tracks)
        }
        return out
