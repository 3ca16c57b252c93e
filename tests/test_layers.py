"""The layer map in CONTRIBUTING.md is the truth: no module imports one above it, and the UI stays lazy."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.no_test_model


def _layers() -> dict[str, int]:
    text = (REPO / "CONTRIBUTING.md").read_text()
    layers = {}
    for number, modules in re.findall(r"^\| (\d+) \| (.+?) \|", text, re.M):
        for name in re.findall(r"`([\w_]+)`", modules):
            layers[name] = int(number)
    return layers


def _imports(path: object) -> set[str]:
    tree = ast.parse(path.read_text())  # type: ignore[attr-defined]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_is_in_the_map_and_imports_only_downwards() -> None:
    layers = _layers()
    modules = {p.stem: p for p in (REPO / "lmbench").glob("*.py")}
    assert set(modules) == set(layers), f"modules missing from the map: {set(modules) ^ set(layers)}"
    wrong = [
        f"{name} (layer {layers[name]}) imports {dep} (layer {layers[dep]})"
        for name, path in modules.items()
        for dep in _imports(path) - {name}
        if layers[dep] > layers[name]
    ]
    assert wrong == []


def test_import_lmbench_leaves_the_ui_and_plotting_out() -> None:
    heavy = "('ipywidgets', 'plotly', 'lmbench.workbench')"
    code = f"import sys, lmbench; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
    code = "import lmbench; print(lmbench.panel.__module__, lmbench.Panel.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["lmbench.workbench", "Panel"]
