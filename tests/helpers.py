"""Shared test helpers: run the command line in-process and check its one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cnnmrf.cli.app import app


def invoke(*args: str | Path) -> Result:
    """Run ``cnnmrf ARGS...`` in-process (stdout and stderr captured separately)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def text(result: Result) -> str:
    """The output with rich's line wrapping undone (whitespace runs collapsed to one space)."""
    return " ".join(result.output.split())


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command exited 1 with exactly one ``error:`` line on stderr, holding every fragment, and no traceback.

    Returns:
        The error line.
    """
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# The real FLIC copy (examples.mat + images/) that the FLIC tests read, never write: $CNNMRF_FLIC where set, else
# ../shared/flic/FLIC beside the checkout. Absent on a user's machine: those tests skip.
FLIC_ENV = "CNNMRF_FLIC"


def flic_dir() -> Path:
    """Where the real FLIC copy is looked for: ``$CNNMRF_FLIC``, else ``../shared/flic/FLIC`` beside the checkout."""
    return Path(os.environ.get(FLIC_ENV) or Path(__file__).resolve().parents[2] / "shared" / "flic" / "FLIC")


def require_flic() -> Path:
    """The real FLIC copy; skips the calling test, saying where it looked, when it is absent."""
    path = flic_dir()
    if not (path / "examples.mat").is_file() or not (path / "images").is_dir():
        pytest.skip(f"no FLIC copy at {path} (examples.mat + images/; set {FLIC_ENV} to point elsewhere)")
    return path


# Every command of `cnnmrf --help`, in its order.
COMMANDS: tuple[str, ...] = (
    "preprocess",
    "train-detector",
    "train-mrf",
    "train-joint",
    "train-person",
    "evaluate",
    "predict",
    "calibrate",
)
