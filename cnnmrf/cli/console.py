"""The one rich console every command prints through, and the guard that turns expected errors into one line."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from cnnmrf.cli.options import DebugOpt
from cnnmrf.errors import CnnmrfError
from cnnmrf.interrupts import check_interrupted, handling_interrupts, stopped_by

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
debug_mode = {"on": False}  # set by the --debug flag of the top-level callback


def plain(text: object) -> str:
    """``text`` made safe to print as it is: control characters (terminal escape codes, newlines) shown as ``\\x1b``,
    ``\\n``... and rich markup escaped. Everything taken from a file name or a file's content goes through this."""
    chars = (c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in str(text))
    return escape("".join(chars))


def fail(message: str) -> None:
    """Print a one-line error to stderr (no traceback), shown as plain text (see :func:`plain`)."""
    err_console.print(f"[bold red]error:[/] {plain(message)}", soft_wrap=True)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a CnnmrfError prints one line and exits 1 (full traceback with --debug), and Ctrl-C stops
    it with one line and exit code 130 (SIGTERM: 143; see :mod:`cnnmrf.interrupts`).

    The wrapper also takes ``--debug`` after the command's name (:data:`cnnmrf.cli.options.DebugOpt`, added to the
    signature Typer reads), as the top-level callback does before it.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        if debug:
            debug_mode["on"] = True  # the top-level callback, which runs first, reset it for this invocation
        try:
            with handling_interrupts():
                return command(*args, **kwargs)
        except CnnmrfError as err:
            if debug_mode["on"]:
                raise
            fail(str(err))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            message, code = stopped_by()
            fail(message)
            raise typer.Exit(code) from None

    signature = inspect.signature(command, eval_str=True)
    if "debug" in signature.parameters:
        raise TypeError(f"{command.__name__} has a parameter named debug: guarded adds its own")
    debug = inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=DebugOpt)
    parameters = [*signature.parameters.values(), debug]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper


@contextmanager
def progress_bar(
    label: str, transient: bool = False, show_rate: bool = False, show_detail: bool = False
) -> Iterator[Callable[..., None]]:
    """A progress bar fed by the yielded ``on_progress(done, total)`` callback of a library function.

    The bar appears at the first call, i.e. only once the function has checked its inputs (so an early one-line error
    is not drawn over), and is stopped however the block ends. ``show_rate`` adds items per second; ``show_detail``
    adds the text given as ``on_progress(done, total, detail)``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn()]
    if show_rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    if show_detail:
        columns.append(TextColumn("{task.fields[detail]}"))
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    progress = Progress(*columns, console=console, transient=transient)
    task = progress.add_task(label, total=None, rate="", detail="")

    def on_progress(done: int, total: int, detail: str = "") -> None:
        check_interrupted()  # a Ctrl-C that some library swallowed still stops the command here
        if not progress.live.is_started:
            progress.start()
        fields = {"rate": f"{done / (progress.tasks[0].elapsed or 1e-9):.1f} img/s"} if show_rate else {}
        progress.update(task, completed=done, total=total, detail=detail, **fields)

    try:
        yield on_progress
    finally:
        if progress.live.is_started:
            progress.stop()
