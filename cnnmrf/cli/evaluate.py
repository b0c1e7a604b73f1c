"""`cnnmrf evaluate`: FLIC PCK on the test split."""

from __future__ import annotations

import typer

from cnnmrf.cli.options import DataPath


def evaluate(data: DataPath) -> None:
    """Score a checkpoint on the test split (not implemented yet)."""
    raise typer.Exit(2)
