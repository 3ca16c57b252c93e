"""Every fenced example in README.md and docs/*.md, run as written (the API ones against a server on a free port).

Python blocks of one page run in order in one namespace, as in a notebook; a block fenced as
``python no-run`` (it needs what a test machine lacks) must still compile. Shell lines run here
unless another test runs them (NOT_HERE).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)( no-run)?\n(.*?)^```", re.S | re.M)
# Lines of shell blocks run elsewhere: the Makefile targets (CI), papermill (test_notebooks),
# the API server (test_cli), the benchmarks (test_bench), and the models line, which lists alternatives.
NOT_HERE = ("make ", ".venv/bin/papermill", "lmbench serve", "lmbench models list |", ".venv/bin/python bench/")


def _blocks(page: Path) -> list[tuple[str, bool, str]]:
    """(language, runnable, code) of each fenced block of a page."""
    return [(lang, not no_run, code) for lang, no_run, code in FENCE.findall(page.read_text())]


@pytest.fixture
def docs_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scratch folder to run in, the test model findable by alias, and the API on a free port."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(TEST_MODEL.parent))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        yield server.url.removeprefix("http://")


def test_the_readme_is_a_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    for link in re.findall(r"\]\(((?:docs|bench)/[^)#]+)\)", readme):
        assert (REPO / link).exists(), f"README links to a missing {link}"
    assert {p.name for p in PAGES[1:]} <= set(re.findall(r"\(docs/([\w-]+\.md)\)", readme))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples(page: Path, docs_env: str) -> None:
    blocks = [
        (run, code) for lang, run, code in _blocks(page) if lang == "python" and not code.lstrip().startswith("%")
    ]
    namespace: dict[str, object] = {}  # one session per page, as in a notebook: later blocks use earlier names
    for run, code in blocks:
        compiled = compile(code.replace("127.0.0.1:8080", docs_env), page.name, "exec", flags=ast.PyCF_ONLY_AST)
        if run:
            exec(compile(compiled, page.name, "exec"), namespace)
    if page.name == "README.md":
        assert len(blocks) >= 2 and set(lmbench.runs().source) >= {"python", "sweep"}
    if page.name == "api.md":
        assert "api" in set(lmbench.runs().source)


def test_shell_examples(docs_env: str, tmp_path: Path) -> None:
    blocks = [block for page in PAGES for block in _blocks(page)]
    yaml_blocks = [code for lang, _, code in blocks if lang == "yaml"]
    (tmp_path / "sweep.yaml").write_text(yaml_blocks[0])
    lines = [line for lang, _, code in blocks if lang == "bash" for line in code.splitlines() if line.strip()]
    commands = [line for line in lines if not line.startswith(NOT_HERE)]
    assert any(c.startswith("curl") for c in commands) and any(c.startswith("lmbench sweep") for c in commands)
    for command in commands:
        result = subprocess.run(
            command.replace("127.0.0.1:8080", docs_env), shell=True, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert len(lmbench.runs("temps")) == 9, "the YAML sweep: 3 temperatures x 3 seeds"
    assert (tmp_path / "sweep.csv").exists() and (tmp_path / "runs.parquet").exists()


def test_the_python_page_lists_the_public_api_and_the_docs_use_it() -> None:
    """docs/python.md's tables are ``__all__``; the README, the docs and the notebooks reach every other name
    through its family module, so the top level stays small (older names still resolve, from their module)."""
    import importlib

    names, families = (REPO / "docs" / "python.md").read_text().split("## The families")
    listed = re.findall(r"^\| `lmbench\.(\w+)` \|", names, re.M)
    assert set(lmbench.FAMILIES) <= set(re.findall(r"`lmbench\.(\w+)`", families))
    assert sorted(listed) == sorted(set(lmbench.__all__) - {"__version__"}) and len(listed) == len(set(listed))
    assert set(dir(lmbench)) == {*lmbench.__all__, *lmbench.FAMILIES}
    for name, module in lmbench.MOVED.items():
        assert getattr(lmbench, name) is getattr(importlib.import_module(f"lmbench.{module}"), name)
    texts = [p for p in [*PAGES, *(REPO / "notebooks").glob("*.ipynb")] if p.name != "python.md"]
    used = {(m, page.name) for page in texts for m in re.findall(r"\blmbench\.(\w+)", page.read_text())}
    misplaced = sorted(
        (name, page)
        for name, page in used
        if name not in lmbench.__all__ and importlib.util.find_spec(f"lmbench.{name}") is None
    )
    assert not misplaced, f"use the family module (docs/python.md) for: {misplaced}"
