"""Every package the code imports is declared in pyproject.toml: the package's imports in ``[project] dependencies``
(what ``pip install .`` brings), the benchmarks' and the tests' there or in the ``dev`` extras."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the dev extras bring tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Pillow`` = ``pillow``, ``scikit_image`` = ``scikit-image``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: Iterable[str]) -> set[str]:
    """Distribution names of PEP 508 requirement strings (``"ruff==0.17.6"``, ``"tomli>=2; python_version<'3.11'"``)."""
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"unreadable requirement {requirement!r} in pyproject.toml"
        names.add(normalise(match.group(1)))
    return names


DEPENDENCIES = requirement_names(PYPROJECT["project"]["dependencies"])
DEV = requirement_names(PYPROJECT["project"]["optional-dependencies"]["dev"])


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at any depth (in functions, ``if`` blocks, ``try``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(modules: Iterable[str], local: Iterable[str] = ()) -> set[str]:
    """The modules that are neither the standard library, nor this project's, nor ``local``."""
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"cnnmrf", "tests", *local}}


def distributions(module: str) -> set[str]:
    """Distributions that provide an import name (``PIL`` -> ``pillow``, ``skimage`` -> ``scikit-image``); the name
    itself where nothing installed provides it (so an undeclared, uninstalled ``cv2`` is reported as ``cv2``)."""
    return {normalise(d) for d in _installed().get(module, [module])}


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def undeclared(modules: Iterable[str], declared: set[str]) -> dict[str, set[str]]:
    """Each module none of whose distributions is declared, with those distributions."""
    return {m: dists for m in sorted(modules) if not (dists := distributions(m)) & declared}


def imports_of(files: Iterable[Path]) -> dict[str, set[str]]:
    """Third-party modules imported by each file (its folder's sibling modules count as local: the benchmarks import
    ``timing`` from beside themselves)."""
    out = {}
    for path in files:
        siblings = {p.stem for p in path.parent.glob("*.py")}
        out[str(path.relative_to(ROOT))] = third_party(imported_modules(path.read_text(encoding="utf-8")), siblings)
    return out


def assert_declared(found: dict[str, set[str]], declared: set[str], where: str) -> set[str]:
    """Every module in ``found`` (file -> its third-party imports) is provided by a distribution in ``declared``.

    Returns:
        All the modules found.
    """
    assert found, "no source files found"
    modules = set().union(*found.values())
    missing = [
        f"{module} (distribution {' or '.join(sorted(dists))}; in {', '.join(f for f in found if module in found[f])})"
        for module, dists in undeclared(modules, declared).items()
    ]
    assert not missing, f"imported but not declared in pyproject.toml's {where}: {'; '.join(missing)}"
    return modules


def test_the_package_imports_only_its_declared_dependencies() -> None:
    modules = assert_declared(imports_of(sorted((ROOT / "cnnmrf").rglob("*.py"))), DEPENDENCIES, "dependencies")
    assert {"torch", "numpy", "PIL", "skimage"} <= modules  # the walk found the imports (also the ones in functions)


def test_benchmarks_and_tests_import_only_declared_packages() -> None:
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    modules = assert_declared(imports_of(files), DEPENDENCIES | DEV, "dependencies or dev extras")
    assert "pytest" in modules


def test_dev_tools_are_pinned() -> None:
    """ruff is pinned exactly (a new ruff formats differently: `ruff format --check` must not change under CI)."""
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(re.fullmatch(r"ruff==\d+(\.\d+)*", r.replace(" ", "")) for r in dev), dev


@pytest.mark.parametrize(
    ("module", "distribution"), [("PIL", "pillow"), ("skimage", "scikit-image"), ("torch", "torch")]
)
def test_import_names_map_to_distributions(module: str, distribution: str) -> None:
    assert distribution in distributions(module)


def test_an_undeclared_import_is_caught() -> None:
    source = """
import os
import numpy as np
import skimage.io
from PIL import Image
from . import sibling
from cnnmrf.joints import JOINT_NAMES
import timing

def load(path):
    import cv2  # inside a function: still an import the package needs
    return cv2.imread(path)

try:
    import pytest
except ImportError:
    pytest = None
"""
    modules = third_party(imported_modules(source), local={"timing"})
    assert modules == {"numpy", "skimage", "PIL", "cv2", "pytest"}
    # cv2 is declared nowhere; pytest only in the dev extras, which `pip install .` does not bring.
    assert set(undeclared(modules, DEPENDENCIES)) == {"cv2", "pytest"}
    assert set(undeclared(modules, DEPENDENCIES | DEV)) == {"cv2"}
    with pytest.raises(AssertionError, match=r"dev extras: cv2 \(distribution cv2; in snippet.py\)\n"):
        assert_declared({"snippet.py": modules}, DEPENDENCIES | DEV, "dependencies or dev extras")
