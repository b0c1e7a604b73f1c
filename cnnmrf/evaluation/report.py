"""Evaluation outputs: predictions.json, metrics.json, the PCK curve figure and a rich PCK table."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnmrf.evaluation.pck import PCKResult
from cnnmrf.files import atomic_path, atomic_write_bytes
from cnnmrf.joints import JOINT_NAMES

if TYPE_CHECKING:
    from rich.table import Table

TABLE_ROWS: tuple[str, ...] = ("wrist", "elbow", "shoulder", "hip", "nose", "torso", "mean")
PLOT_GROUPS: tuple[str, ...] = ("wrist", "elbow", "shoulder")


def _json_default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Atomically write strict JSON (NaN/inf rejected)."""
    text = json.dumps(payload, indent=1, allow_nan=False, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _round(x: float, digits: int) -> float | None:
    """Round a finite float, None for NaN/inf."""
    return round(float(x), digits) if np.isfinite(x) else None


def save_predictions(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    files: Sequence[str],
    joints: np.ndarray,
    scores: np.ndarray,
    joint_names: Sequence[str] = JOINT_NAMES,
) -> None:
    """Write ``predictions.json`` atomically.

    Format: ``{"examples": [{"index": i, "file": name, "joints": {"lsho": [x, y], ...},
    "scores": {"lsho": s, ...}}, ...]}``; coordinates rounded to 0.01 px, scores to 1e-4, NaN -> null.

    Args:
        path: Output file.
        indices: (N,) 0-based indices into examples.mat.
        files: N image file names.
        joints: (N, K, 2) predicted (x, y) in original-image pixels.
        scores: (N, K) confidence of each prediction.
        joint_names: K joint names (JSON keys).
    """
    names = list(joint_names)
    idx = np.asarray(indices).reshape(-1)
    joints = np.asarray(joints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n, k = len(idx), len(names)
    if len(files) != n or joints.shape != (n, k, 2) or scores.shape != (n, k):
        raise ValueError(
            f"inconsistent shapes: {n} indices, {len(files)} files, joints {joints.shape}, scores {scores.shape}, "
            f"{k} joint names"
        )
    examples = [
        {
            "index": int(i),
            "file": str(f),
            "joints": {name: [_round(x, 2), _round(y, 2)] for name, (x, y) in zip(names, p.tolist())},
            "scores": {name: _round(s, 4) for name, s in zip(names, s_row.tolist())},
        }
        for i, f, p, s_row in zip(idx.tolist(), files, joints, scores)
    ]
    _write_json(path, {"examples": examples})


def load_predictions(
    path: str | os.PathLike[str], joint_names: Sequence[str] = JOINT_NAMES
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Read a ``predictions.json`` written by :func:`save_predictions`.

    Args:
        path: The file.
        joint_names: Column order of the returned arrays.

    Returns:
        ``(indices (N,) int64, files list of N str, joints (N, K, 2) float64, scores (N, K) float64)``;
        nulls come back as NaN.
    """
    with open(path, encoding="utf-8") as f:
        examples = json.load(f)["examples"]
    names = list(joint_names)
    nan = float("nan")
    indices = np.array([e["index"] for e in examples], dtype=np.int64)
    files = [str(e["file"]) for e in examples]
    joints = np.array(
        [[[nan if v is None else v for v in e["joints"][n]] for n in names] for e in examples], dtype=np.float64
    ).reshape(len(examples), len(names), 2)
    scores = np.array(
        [[nan if e["scores"][n] is None else e["scores"][n] for n in names] for e in examples], dtype=np.float64
    ).reshape(len(examples), len(names))
    return indices, files, joints, scores


def save_metrics(path: str | os.PathLike[str], result: PCKResult, extra: dict[str, Any] | None = None) -> None:
    """Write ``metrics.json`` atomically: ``result.to_dict()`` merged with ``extra`` at the top level.

    Args:
        path: Output file.
        result: The PCK result.
        extra: Additional JSON-serialisable entries (e.g. split, checkpoint, whether the MRF was used);
            they must not reuse a key of ``result.to_dict()``.

    Raises:
        ValueError: If ``extra`` clashes with a key of the result.
    """
    payload = result.to_dict()
    extra = dict(extra or {})
    clash = sorted(set(payload) & set(extra))
    if clash:
        raise ValueError(f"extra keys clash with PCK result keys: {clash}")
    payload.update(extra)
    _write_json(path, payload)


def plot_pck_curves(
    result: PCKResult,
    path: str | os.PathLike[str],
    *,
    label: str = "ConvNet + MRF",
    other: PCKResult | None = None,
    other_label: str = "ConvNet alone",
    groups: Sequence[str] = PLOT_GROUPS,
) -> None:
    """Draw PCK (%) against normalised distance (0..0.5), one panel per joint group (the paper's Fig. 5).

    Args:
        result: The main result (solid lines).
        path: Output PNG, written atomically.
        label: Legend label of ``result``.
        other: Optional second result (e.g. detector alone), drawn dashed.
        other_label: Legend label of ``other``.
        groups: Groups to plot, one panel each (left/right averaged).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.0 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        series = [(result, label, "-")] + ([(other, other_label, "--")] if other is not None else [])
        for res, lab, style in series:
            ax.plot(res.curve_thresholds, res.group_curves[group] * 100.0, style, linewidth=2, label=lab)
        ax.set_title(group.capitalize())
        ax.set_xlabel("Normalized distance")
        ax.set_ylabel("Detection rate (%)")
        ax.set_xlim(0.0, 0.5)
        ax.set_ylim(0.0, 100.0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)


def pck_table(result: PCKResult, title: str = "PCK (%)") -> Table:
    """PCK table: rows wrist, elbow, shoulder, hip, nose, torso, mean; columns the result's thresholds.

    Args:
        result: The PCK result.
        title: Table title.

    Returns:
        A ``rich.table.Table`` of percentages (one decimal; "-" where nothing was labelled).
    """
    from rich.table import Table

    table = Table(title=title)
    table.add_column("joint")
    for r in result.thresholds:
        table.add_column(f"r={float(r):g}", justify="right")
    for row in TABLE_ROWS:
        if row not in result.groups:
            continue
        cells = [f"{v * 100:.1f}" if np.isfinite(v) else "-" for v in result.groups[row]]
        table.add_row(row, *cells, end_section=(row == "torso"))
    return table
