"""The peak decoding methods, as a choice (no numpy or torch: the command line lists them without loading those)."""

from __future__ import annotations

import enum


class Decoding(str, enum.Enum):
    """How a heatmap's peak becomes a sub-pixel position."""

    argmax = "argmax"  # the integer peak
    parabola = "parabola"  # a 1-D parabola through the peak and its neighbours, on each axis
    dark = "dark"  # distribution-aware: smoothed softmax, 2-D Newton step (decode_heatmaps_dark)
