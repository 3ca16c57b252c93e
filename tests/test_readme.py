"""The README's examples, run as written (the API ones against a server on a free port instead of 8080)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, TEST_MODEL

import lmbench
from lmbench.api import Settings
from lmbench.server import Server

BLOCKS = re.findall(r"```(\w*)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
# Lines of shell blocks run elsewhere: the Makefile targets (CI), papermill (test_notebooks),
# the API server (test_cli), the benchmarks (test_bench), and the models line, which lists alternatives.
NOT_HERE = ("make ", ".venv/bin/papermill", "lmbench serve", "lmbench models list |", ".venv/bin/python bench/")


@pytest.fixture
def readme_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scratch folder to run in, the test model findable by alias, and the API on a free port."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(TEST_MODEL.parent))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        yield server.url.removeprefix("http://")


def test_python_examples(readme_env: str) -> None:
    blocks = [code for lang, code in BLOCKS if lang == "python" and not code.lstrip().startswith("%")]
    assert len(blocks) >= 6
    namespace: dict[str, object] = {}  # one session, as in a notebook: later blocks use earlier imports
    for code in blocks:
        exec(compile(code.replace("127.0.0.1:8080", readme_env), "README.md", "exec"), namespace)
    sources = set(lmbench.runs().source)
    assert {"python", "sweep", "api"} <= sources


def test_shell_examples(readme_env: str, tmp_path: Path) -> None:
    yaml_blocks = [code for lang, code in BLOCKS if lang == "yaml"]
    (tmp_path / "sweep.yaml").write_text(yaml_blocks[0])
    lines = [line for lang, code in BLOCKS if lang == "bash" for line in code.splitlines() if line.strip()]
    commands = [line for line in lines if not line.startswith(NOT_HERE)]
    assert any(c.startswith("curl") for c in commands) and any(c.startswith("lmbench sweep") for c in commands)
    for command in commands:
        result = subprocess.run(
            command.replace("127.0.0.1:8080", readme_env), shell=True, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert len(lmbench.runs("temps")) == 9, "the YAML sweep: 3 temperatures x 3 seeds"
    assert (tmp_path / "sweep.csv").exists() and (tmp_path / "runs.parquet").exists()
