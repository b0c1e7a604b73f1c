"""Ctrl-C (and SIGTERM, as `kill` sends): one KeyboardInterrupt per command, also where C code swallowed it, and none
inside critical sections."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_FRESH = {"interrupted": False, "armed": True, "deferring": 0, "pending": False}
_state = dict(_FRESH)
HANDLED = (signal.SIGINT, signal.SIGTERM)  # the signals that stop a command cleanly
_last = {"signal": int(signal.SIGINT)}  # the signal that stopped the last command (kept after it ends)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt (or waits for the critical section to end); later ones,
    which arrive while the command is cleaning up, are ignored so that the clean-up completes."""
    if not _state["interrupted"]:
        _last["signal"] = signum
    if _state["deferring"]:
        _state["pending"] = True
        return
    _state["interrupted"] = True
    if _state["armed"]:
        _state["armed"] = False
        raise KeyboardInterrupt


def _on_unraisable(previous: object) -> object:
    """An unraisable-exception hook that silences a KeyboardInterrupt raised where Python can only print it (a
    weakref callback, a ``__del__``): the command still stops at its next :func:`check_interrupted`, and the next
    Ctrl-C raises again."""

    def hook(unraisable: object) -> None:
        if getattr(unraisable, "exc_type", None) is KeyboardInterrupt:
            _state["armed"] = True
            return
        previous(unraisable)  # type: ignore[operator]

    return hook


@contextmanager
def handling_interrupts() -> Iterator[None]:
    """Run a command with :func:`_on_sigint` as the SIGINT and SIGTERM handler (main thread only; elsewhere nothing
    changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_sigint) for signum in HANDLED}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _on_unraisable(previous_hook)  # type: ignore[assignment]
    _state.update(_FRESH)
    _last["signal"] = int(signal.SIGINT)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _state.update(_FRESH)


def stopped_by() -> tuple[str, int]:
    """What stopped the last command, and its exit code (128 + the signal): ``interrupted`` 130 for Ctrl-C (SIGINT, or
    an interrupt that arrived otherwise), ``terminated`` 143 for SIGTERM."""
    signum = _last["signal"]
    return ("terminated" if signum == signal.SIGTERM else "interrupted"), 128 + int(signum)


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed: long loops call this once per item, so an interrupt that some
    library swallowed (as C extensions may, printing "Exception ignored") still stops the command promptly."""
    if _state["interrupted"]:
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs (e.g. renaming a pair of output files); it is raised after the block."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        if not _state["deferring"] and _state["pending"]:
            _state.update(pending=False, interrupted=True, armed=False)
            raise KeyboardInterrupt


def ignore_interrupts() -> None:
    """Ignore SIGINT in this process and let SIGTERM end it at once: the initializer of worker processes, which the
    parent stops (with SIGTERM) on Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # forked with the parent's handler, which would raise in the worker
