"""Shared fixtures: the real test model, and an isolated lmbench home per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lmbench

REPO = Path(__file__).resolve().parents[1]


def _test_model() -> Path:
    value = os.environ.get("LMBENCH_TEST_MODEL") or str(REPO.parent / "shared" / "models" / "stories260K.gguf")
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        pytest.exit(f"test model not found at {path}: set LMBENCH_TEST_MODEL to stories260K.gguf", returncode=3)
    return path


TEST_MODEL = _test_model()


@pytest.fixture(autouse=True)
def lmbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own $LMBENCH_HOME (and so its own run store and presets)."""
    home = tmp_path / "lmbench-home"
    monkeypatch.setenv("LMBENCH_HOME", str(home))
    monkeypatch.setenv("LMBENCH_MODEL", str(TEST_MODEL))
    monkeypatch.delenv("LMBENCH_MODEL_PATH", raising=False)
    lmbench.use_store(None)
    return home


@pytest.fixture
def model_path() -> Path:
    return TEST_MODEL


@pytest.fixture
def engine() -> lmbench.Engine:
    return lmbench.load(TEST_MODEL)
