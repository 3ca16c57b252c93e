"""Shared fixtures: the real test model, and an isolated lmbench home per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lmbench

REPO = Path(__file__).resolve().parents[1]


def _test_model() -> Path:
    value = os.environ.get("LMBENCH_TEST_MODEL") or str(REPO.parent / "shared" / "models" / "stories260K.gguf")
    path = Path(value).expanduser().resolve()
    if not path.is_file() and os.environ.get("CI"):
        pytest.exit(f"test model not found at {path}: set LMBENCH_TEST_MODEL to stories260K.gguf", returncode=3)
    return path


# A tool whose argument is one of two words: the story model's call is short and always complete.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Rome"]}},
            "required": ["city"],
        },
    },
}

TEST_MODEL = _test_model()
MISSING_TEST_MODEL = (
    None
    if TEST_MODEL.is_file()
    else f"needs the test model stories260K.gguf, absent at {TEST_MODEL} "
    "(set LMBENCH_TEST_MODEL; CI fails instead of skipping)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that run the engine are ``slow`` (``pytest -m "not slow"`` is the fast tier); without the
    test model (a fresh clone with no ../shared) only the tests that do not need it run."""
    for item in items:
        if item.get_closest_marker("no_test_model") is None or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    if MISSING_TEST_MODEL is None:
        return
    for item in items:
        needs_it = {"model_path", "engine", "synthetic_model"} & set(getattr(item, "fixturenames", ()))
        if (item.get_closest_marker("no_test_model") is None or needs_it) and item.path.suffix != ".ipynb":
            item.add_marker(pytest.mark.skip(reason=MISSING_TEST_MODEL))


@pytest.fixture(autouse=True, scope="module")
def _no_engine_left_loaded() -> Iterator[None]:
    """Each test file starts with no engine loaded: an engine keeps its load settings (a small n_ctx, one
    slot), so one left by another file would change what this file's calls get."""
    yield
    lmbench.unload()


@pytest.fixture(autouse=True)
def lmbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own $LMBENCH_HOME (and so its own run store and presets)."""
    home = tmp_path / "lmbench-home"
    monkeypatch.setenv("LMBENCH_HOME", str(home))
    monkeypatch.setenv("LMBENCH_MODEL", str(TEST_MODEL))
    monkeypatch.delenv("LMBENCH_MODEL_PATH", raising=False)
    lmbench.use_store(None)
    return home


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama with Q8_0 weights and the test model's tokenizer (it ends stories at random)."""
    from bench.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synthetic") / "tiny-q8.gguf", n_embd=64, n_layer=2, n_head=4, n_ff=128)


@pytest.fixture
def model_path() -> Path:
    return TEST_MODEL


@pytest.fixture
def engine() -> lmbench.Engine:
    return lmbench.load(TEST_MODEL)


def after(n: int, action: Callable[[], object]) -> Callable[[lmbench.Run], None]:
    """An ``on_run`` callback that calls ``action`` once ``n`` runs have been recorded: a way to act mid-sweep."""
    heard: list[str] = []

    def on_run(run: lmbench.Run) -> None:
        heard.append(run.id)
        if len(heard) == n:
            action()

    return on_run


@pytest.fixture
def panel(model_path: Path) -> Iterator[lmbench.Panel]:
    """A panel on the test model, stopped after the test (files that need other settings override it)."""
    p = lmbench.panel(str(model_path))
    yield p
    p.cancel.set()
    p.wait(60)
