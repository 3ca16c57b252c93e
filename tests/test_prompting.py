"""One rule for template vs raw, and what was asked vs what was sent, through every door.

The instruct model here is the test model with a ChatML template added to its metadata (fast);
restore-and-rerun from the panel's History is checked on SmolLM2, the default model.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_MODEL
from IPython.core.interactiveshell import InteractiveShell

import lmbench
from lmbench.serve import Settings
from lmbench.serve._routes import answer
from lmbench.serve._service import Service
from lmbench.store._migrations import MIGRATIONS, migrate

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SENT = "<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def instruct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model with a ChatML ``tokenizer.chat_template`` (an instruct model, for the rule)."""
    target = tmp_path_factory.mktemp("chatml") / "stories260K-chatml.gguf"
    script = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata"]
    subprocess.run(
        [*script, str(TEST_MODEL), str(target), "--chat-template", CHATML],
        check=True,
        capture_output=True,
        input=b"y\n",
    )
    return target


def test_generate_sends_an_instruct_models_prompt_through_its_template_and_records_what_was_asked(
    instruct: Path,
) -> None:
    run = lmbench.generate("Once upon a time", model=instruct, max_tokens=6, seed=1, stop=["zz"], experiment="rule")
    assert (run.prompt, run.prompt_sent, run.chat_format) == ("Once upon a time", SENT, "gguf")
    assert run.stop == ("zz",), "the stop strings asked for; the template's own are implied by chat_format"
    assert run.prompt_mode == "chat template (gguf)"
    assert run.prompt_tokens == len(lmbench.load(instruct).tokenize(SENT, add_bos=False, special=True))
    stored = lmbench.get_store().get(run.id)
    assert (stored.prompt, stored.prompt_sent, stored.stop) == ("Once upon a time", SENT, ("zz",))
    table = lmbench.runs("rule")
    assert table.prompt.tolist() == ["Once upon a time"] and "prompt_sent" not in table
    assert lmbench.runs("rule", heavy=True).prompt_sent.tolist() == [SENT], "kept for export and Debug"
    assert "Once upon a time" in lmbench.compare([run.id], by="temperature").to_html()
    assert "im_start" not in lmbench.compare([run.id], by="temperature").to_html()


def test_raw_sends_the_text_as_it_is_and_a_base_model_always_does(instruct: Path) -> None:
    raw = lmbench.generate("Once upon a time", model=instruct, raw=True, max_tokens=4, seed=1)
    assert (raw.prompt, raw.prompt_sent, raw.chat_format, raw.prompt_mode) == (
        "Once upon a time",
        "Once upon a time",
        None,
        "raw text",
    )
    base = lmbench.generate("Once upon a time", max_tokens=4, seed=1)
    assert base.chat_format is None and base.prompt_sent == base.prompt
    assert base.text == raw.text, "same weights, same text sent, same seed"


def test_a_system_prompt_goes_through_the_template_and_is_refused_where_there_is_none(instruct: Path) -> None:
    run = lmbench.generate("Hi", model=instruct, system="Be brief.", max_tokens=3, seed=1)
    assert run.prompt == "Hi" and run.prompt_sent.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert run.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(lmbench.ParameterError, match="has no chat template"):
        lmbench.generate("Hi", system="Be brief.", max_tokens=3)
    with pytest.raises(lmbench.ParameterError, match="raw=True"):
        lmbench.generate("Hi", model=instruct, raw=True, system="Be brief.", max_tokens=3)
    with pytest.raises(lmbench.ParameterError, match="raw must be True or False"):
        lmbench.generate("Hi", raw="yes", max_tokens=3)  # type: ignore[arg-type]
    assert len(lmbench.runs()) == 1, "nothing ran for the refused calls"


def test_the_api_generate_route_follows_the_rule_and_completions_stay_raw(instruct: Path) -> None:
    service = Service(Settings(model=str(instruct)))
    templated = answer(service, "generate", {"prompt": "Once upon a time", "max_tokens": 4, "seed": 1})
    raw = answer(service, "generate", {"prompt": "Once upon a time", "max_tokens": 4, "seed": 1, "raw": True})
    completion = answer(service, "completion", {"prompt": "Once upon a time", "max_tokens": 4, "seed": 1})
    assert (templated["chat_format"], raw["chat_format"]) == ("gguf", None)
    assert templated["usage"]["prompt_tokens"] != raw["usage"]["prompt_tokens"]
    assert completion["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"], "/v1/completions is raw text"
    store = lmbench.get_store()
    assert store.get(templated["run_id"]).prompt == "Once upon a time"
    assert store.get(templated["run_id"]).prompt_sent == SENT
    with pytest.raises(Exception, match="raw"):
        answer(service, "generate", {"prompt": "x", "raw": "yes"})


def test_the_magic_the_cli_and_a_sweep_follow_the_rule(instruct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lmbench")
    try:
        shell.run_line_magic("lmbench", f"model {instruct}")
        run = shell.run_cell_magic("lmbench", "-n 4 -s 1 --no-stream", "Once upon a time")
        assert (run.prompt, run.chat_format) == ("Once upon a time", "gguf")
        table = shell.run_line_magic("lmbench", "runs --last 5")
        assert list(table.columns) == [
            "model_name",
            "prompt",
            "text",
            "finish_reason",
            "completion_tokens",
            "tokens_per_s",
            "sent as",
            "id",
        ]
        assert table.prompt.tolist() == ["Once upon a time"] and table["sent as"].tolist() == ["chat template (gguf)"]
        assert len(shell.run_line_magic("lmbench", "runs --all").columns) > 40
    finally:
        shell.run_line_magic("unload_ext", "lmbench")
    swept = lmbench.sweep(
        model=str(instruct), prompts=["Once upon a time"], grid={"temperature": [0.0]}, seeds=1, max_tokens=3
    )
    assert swept.prompt.tolist() == ["Once upon a time"] and swept.chat_format.tolist() == ["gguf"]
    cli = subprocess.run(
        [sys.executable, "-m", "lmbench.cli", "run", "Once upon a time", "--model", str(instruct), "-n", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert "chat template (gguf)" in cli.stderr


def test_older_runs_are_migrated_to_what_was_asked_and_what_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    before = [(name, step) for name, step in MIGRATIONS if name < "0016"]
    for name, step in before:
        if callable(step):
            step(old)
        else:
            old.executescript(step)
        old.execute("INSERT INTO _migrations VALUES (?, 'then')", (name,))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rows = [
        ("raw1", "Once", "[]", None, None),
        ("plain1", "Be brief.\n\nUser: Hi\nAssistant:", '["zz", "\\nUser:"]', json.dumps(messages), "plain"),
        (
            "gguf1",
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            '["<|im_end|>"]',
            json.dumps(messages),
            "gguf",
        ),
    ]
    for run_id, prompt, stop, turns, chat_format in rows:
        old.execute(
            "INSERT INTO runs (id, created_at, prompt, text, stop, tags, seed, max_tokens, messages, chat_format) "
            "VALUES (?, '2025-01-01T00:00:00+00:00', ?, 't', ?, '[]', 3, 10, ?, ?)",
            (run_id, prompt, stop, turns, chat_format),
        )
    assert migrate(old)[0] == "0016_prompt_as_asked"
    found = {r[0]: r[1:] for r in old.execute("SELECT id, prompt, prompt_sent, stop FROM runs")}
    assert found["raw1"] == ("Once", "Once", "[]")
    assert found["plain1"] == ("Hi", rows[1][1], '["zz"]'), "the plain transcript's stop is the template's"
    assert found["gguf1"] == ("Hi", rows[2][1], "[]"), "the end-of-turn text the template writes is its stop"


def _click(panel: lmbench.Panel, button: object) -> None:
    button.click()  # type: ignore[attr-defined]
    panel.wait(300)
    assert not panel.busy and panel.error.value == "", panel.error.value


def test_restore_from_history_and_generate_reproduces_the_run_on_the_default_model() -> None:
    panel = lmbench.panel("smollm2-135m-instruct")
    typed = "Resume en una frase: el gato duerme al sol."
    panel.prompt.value = typed
    panel.system.value = "Responde en español."
    panel.form.sliders["max_tokens"].value = 12
    panel.form.sliders["temperature"].value = 0.7
    panel.form.random_seed.value = False
    panel.form.seed.value = 42
    _click(panel, panel.generate_button)
    first = panel.last_run
    assert first is not None and first.chat_format == "gguf" and first.prompt == typed
    assert f"{first.prompt_tokens} tokens of" in panel.token_count.value, "the counter counts what was sent"
    assert "chat template (gguf)" in panel.stats.value and "chat template (gguf)" in panel.events[-1]
    assert typed[:30] in panel.history.runs.options[0][0] and "im_start" not in panel.history.runs.options[0][0]
    assert "im_start" not in panel.output.value

    panel.prompt.value, panel.system.value = "something else", ""
    panel.form.seed.value = 7
    panel.history.runs.value = first.id
    assert (panel.prompt.value, panel.system.value) == (typed, "Responde en español.")
    assert list(panel.form.stop.value) == [], "the template's stop string is not put in the box"
    assert panel.form.raw.value is False and panel.form.seed.value == 42
    _click(panel, panel.generate_button)
    again = panel.last_run
    assert again is not None and again.id != first.id
    assert (again.prompt_sent, again.prompt_tokens, again.text) == (first.prompt_sent, first.prompt_tokens, first.text)


def test_the_compare_tab_sends_what_generate_sends(instruct: Path) -> None:
    panel = lmbench.panel(str(instruct))
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 4
    panel.compare.values.value = "0.2, 0.9"
    _click(panel, panel.compare.button)
    runs = lmbench.runs()
    assert runs.chat_format.tolist() == ["gguf", "gguf"] and runs.prompt.tolist() == ["Once upon a time"] * 2
    panel.form.raw.value = True
    _click(panel, panel.compare.button)
    assert lmbench.runs().chat_format.isna().sum() == 2


def test_a_fork_of_a_templated_run_sends_what_the_run_sent(instruct: Path) -> None:
    parent = lmbench.generate("Once upon a time", model=instruct, max_tokens=8, seed=3, temperature=0, logprobs=3)
    alternative = parent.token_logprobs[2]["top"][1]["id"]
    child = lmbench.fork(parent, 2, alternative)
    assert (child.prompt, child.prompt_sent, child.chat_format) == (parent.prompt, parent.prompt_sent, "gguf")
    assert child.prompt_tokens == parent.prompt_tokens, "the same text sent, the same way"
    assert child.token_logprobs[:2] == parent.token_logprobs[:2]
