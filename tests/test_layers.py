"""The layer map in CONTRIBUTING.md is the truth: no unit imports one above it, and the UI stays lazy."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.no_test_model

PACKAGE = REPO / "lmbench"


def _layers() -> dict[str, int]:
    """Unit name (a flat module's stem or a package's folder) -> its layer, from CONTRIBUTING.md's table."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    layers = {}
    for number, units in re.findall(r"^\| (\d+) \| (.+?) \|", text, re.M):
        for name in re.findall(r"`([\w_]+)/?`", units):
            layers[name] = int(number)
    return layers


def _units() -> dict[str, list[Path]]:
    """Each top-level unit of lmbench/ and its files: a flat module, or every module of a package."""
    units: dict[str, list[Path]] = {p.stem: [p] for p in PACKAGE.glob("*.py")}
    for folder in PACKAGE.iterdir():
        if (folder / "__init__.py").exists():
            units[folder.name] = sorted(folder.rglob("*.py"))
    return units


def _imported_units(path: Path) -> set[str]:
    """The lmbench units that ``path`` imports through relative imports (``from ..x import`` included)."""
    package = list(path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        if node.module:
            found.add([*base, *node.module.split(".")][0])
        elif base:
            found.add(base[0])
        else:
            found.update(alias.name for alias in node.names)
    return found


def test_every_unit_is_in_the_map_and_imports_only_downwards() -> None:
    layers = _layers()
    units = _units()
    assert set(units) == set(layers), f"units missing from the map: {set(units) ^ set(layers)}"
    wrong = sorted(
        f"{path.relative_to(PACKAGE)} ({name}, layer {layers[name]}) imports {dep} (layer {layers[dep]})"
        for name, paths in units.items()
        for path in paths
        for dep in _imported_units(path) - {name}
        if layers[dep] > layers[name]
    )
    assert wrong == []


def test_the_map_is_a_short_picture_of_packages() -> None:
    layers = _layers()
    assert max(layers.values()) <= 8, "the layer map should stay a handful of rows"
    for package in ("engine", "store", "serve", "ui"):
        assert package in layers and (PACKAGE / package / "__init__.py").exists()


def test_import_lmbench_leaves_the_ui_and_plotting_out() -> None:
    heavy = "('ipywidgets', 'plotly', 'lmbench.ui._panel')"
    code = f"import sys, lmbench; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
    code = "import lmbench; print(lmbench.panel.__module__, lmbench.Panel.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["lmbench.ui._panel", "Panel"]
