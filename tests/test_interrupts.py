"""Tests for Ctrl-C and SIGTERM: long commands stop promptly with exit code 130 (143), one line, and no temporary or
partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnmrf.interrupts import check_interrupted, deferred_interrupts, handling_interrupts
from cnnmrf.models.checkpoint import load_checkpoint

# Runs the command line with one step made slow (a sleep), so that Ctrl-C surely arrives in the middle of the work.
SLOW_CLI = """
import sys, time
import cnnmrf.data.preprocess as preprocess, cnnmrf.data.dataset as dataset
real_process, real_item = preprocess._process, dataset.FlicDataset.__getitem__
def _process(task):
    time.sleep(0.3)
    return real_process(task)
def _item(self, i):
    time.sleep(0.2)
    return real_item(self, i)
_process.__module__ = preprocess.__name__  # found by name in the pool's workers
preprocess._process, dataset.FlicDataset.__getitem__ = _process, _item
from cnnmrf.cli.app import app
app(sys.argv[1:], prog_name="cnnmrf")
"""


def ctrl_c(
    args: list[str], ready: Callable[[], bool], timeout: float = 60.0, signum: int = signal.SIGINT
) -> subprocess.CompletedProcess:
    """Start ``cnnmrf ARGS`` (slowed down), wait until ``ready()``, press Ctrl-C (SIGINT to its process group, as a
    terminal does; SIGTERM to the process alone, as `kill` does), and return how it ended; fails if it took more
    than 10 s to stop."""
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    if signum == signal.SIGINT:
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signum)
    pressed = time.monotonic()
    try:
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert time.monotonic() - pressed < 10, "did not stop promptly"
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_preprocess_at_once_leaving_nothing(tiny_flic: Path, tmp_path: Path, workers: str) -> None:
    out = tmp_path / "data" / "flic.h5"
    result = ctrl_c(
        ["preprocess", str(tiny_flic), "--out", str(out), "--workers", workers],
        ready=lambda: out.parent.is_dir() and any(out.parent.glob(".flic.h5.*.tmp")),
    )
    assert (result.returncode, result.stderr) == (130, "error: interrupted\n")
    assert not out.parent.exists()  # no dataset, no temporary, not even the folder the run made


@pytest.mark.parametrize(
    ("signum", "code", "line"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_stops_training_keeping_only_complete_checkpoints(
    tiny_h5: Path, tmp_path: Path, signum: int, code: int, line: str
) -> None:
    run = tmp_path / "run"
    args = ["train-detector", str(tiny_h5), "--out", str(run), "--preset", "tiny", "--batch-size", "2"]
    started = {}

    def ready() -> bool:  # a second into the training, once the run has made its folder
        if run.is_dir():
            started.setdefault("at", time.monotonic())
        return "at" in started and time.monotonic() - started["at"] > 0.5

    result = ctrl_c([*args, "--workers", "0", "--epochs", "50", "--device", "cpu"], ready, signum=signum)
    assert (result.returncode, result.stderr) == (code, f"error: {line}\n")
    assert "Traceback" not in result.stdout
    left = sorted(p.name for p in run.iterdir()) if run.exists() else []
    assert left in ([], ["best.pt", "last.pt", "metrics.jsonl"])
    for name in left[:2]:
        load_checkpoint(run / name)


def test_a_critical_section_holds_ctrl_c_back_until_it_ends() -> None:
    steps = []
    with handling_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                steps.append("renamed both files")
    assert steps == ["renamed both files"]


def test_ctrl_c_swallowed_by_a_library_still_stops_the_next_check(capsys: pytest.CaptureFixture[str]) -> None:
    class Finaliser:
        def __del__(self) -> None:  # where Python can only print an exception (as h5py's objects do)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    with handling_interrupts():
        Finaliser()  # created and released: Ctrl-C arrives inside __del__
        with pytest.raises(KeyboardInterrupt):
            check_interrupted()
    check_interrupted()  # a new command starts with no interrupt pending
    assert "Exception ignored" not in capsys.readouterr().err
