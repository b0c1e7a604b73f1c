"""The one rich console every command prints through, and the guard that turns expected errors into one line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from cnnmrf.errors import CnnmrfError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
debug_mode = {"on": False}  # set by the --debug flag of the top-level callback


def fail(message: str) -> None:
    """Print a one-line error to stderr (no traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a CnnmrfError prints one line and exits 1 (full traceback with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CnnmrfError as err:
            if debug_mode["on"]:
                raise
            fail(str(err))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            fail("interrupted")
            raise typer.Exit(130) from None

    return wrapper
