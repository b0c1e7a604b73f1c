"""`cnnmrf predict`: find the joints of people in photos."""

from __future__ import annotations

from pathlib import Path

import typer


def predict(images: list[Path]) -> None:
    """Predict joints (not implemented yet)."""
    raise typer.Exit(2)
