"""Tests for the package's layout rules: imports run one way between stages, and no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnmrf"
MODULES = sorted(PACKAGE.rglob("*.py"))
STAGES = ("data", "models", "losses", "inference", "evaluation", "training", "cli")
# What each stage may not import: data -> models -> losses -> training, with inference and evaluation beside training
# (evaluation scores what inference predicts; training validates with both), and the command line on top. Top-level
# helpers (joints, errors, files, devices, bundled) import no stage.
FORBIDDEN: dict[str, set[str]] = {
    "data": {"models", "losses", "inference", "evaluation", "training", "cli"},
    "models": {"losses", "inference", "evaluation", "training", "cli"},
    "losses": {"inference", "evaluation", "training", "cli"},
    "inference": {"evaluation", "training", "cli"},
    "evaluation": {"training", "cli"},
    "training": {"cli"},
    "cli": set(),
    "": set(STAGES),
}
MAX_LINES = 400


def stage_of(path: Path) -> str:
    """The stage a module belongs to: its sub-package, or "losses", or "" for a top-level helper module."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if len(parts) > 1 or parts[0] in STAGES else ""


def imported_stages(path: Path) -> set[str]:
    """Stages a module imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cnnmrf" and len(parts) > 1 and parts[1] in STAGES:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    stage = stage_of(path)
    assert not imported_stages(path) & FORBIDDEN[stage], f"{path.name} ({stage or 'top level'}) imports a later stage"


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def test_every_module_has_a_docstring() -> None:
    assert [p.name for p in MODULES if not ast.get_docstring(ast.parse(p.read_text()))] == []
