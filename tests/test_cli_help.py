"""Tests that `cnnmrf --help` and every command's --help load no numpy, h5py or torch (they answer at once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnmrf.models.detector import DETECTOR_PRESETS
from cnnmrf.training.config import Preset
from tests.helpers import COMMANDS

HEAVY: tuple[str, ...] = ("torch", "numpy", "h5py")
# Run in a fresh interpreter (this one has loaded everything): the command line with ARGS, then on stderr's last line
# its exit code and the heavy modules it loaded.
SHOW_HELP = f"""
import json, sys
from cnnmrf.cli.app import app
code = 0
try:
    app(sys.argv[1:], prog_name="cnnmrf")
except SystemExit as done:
    code = done.code
print(json.dumps({{"exit": code, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=lambda c: c or "cnnmrf")
def test_help_loads_no_heavy_module(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = subprocess.run([sys.executable, "-c", SHOW_HELP, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "--help" in result.stdout, result.stdout
    report = json.loads(result.stderr.splitlines()[-1])
    assert report["exit"] == 0, result.stderr
    assert report["loaded"] == [], f"`cnnmrf {' '.join(args)}` imported {', '.join(report['loaded'])}"


def test_every_command_is_checked() -> None:
    from cnnmrf.cli.app import app

    assert sorted(c.name for c in app.registered_commands) == sorted(COMMANDS)


def test_preset_choices_are_the_detector_presets() -> None:
    # Preset names the presets itself (cnnmrf.models.detector loads torch): the two lists must agree, in order.
    assert [p.value for p in Preset] == list(DETECTOR_PRESETS)


def test_predict_help_shows_the_bundled_weights_default_min_score() -> None:
    """--help answers without torch, so the bundled weights' stored threshold is a constant: it must stay equal."""
    from cnnmrf.bundled import BUNDLED_MIN_SCORE, default_checkpoint
    from cnnmrf.models.checkpoint import load_checkpoint
    from tests.helpers import invoke, text

    assert load_checkpoint(default_checkpoint())["calibration"]["min_score"] == BUNDLED_MIN_SCORE
    assert f"({BUNDLED_MIN_SCORE:g} for the bundled weights)" in text(invoke("predict", "--help"))
