"""The answer on screen, driven in Python against the real test model: the reply in its own area, a live
counter while it streams, stats of the run shown, errors that clear, Max Tokens that never clamps."""

from __future__ import annotations

import html
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

import lmbench


def _click(panel: lmbench.Panel, button: object) -> None:
    button.click()  # type: ignore[attr-defined]
    panel.wait(120)
    assert not panel.busy


def test_the_reply_has_its_own_area_with_a_copy_button_and_a_live_counter(panel: lmbench.Panel) -> None:
    seen: list[str] = []
    panel.output.observe(lambda change: seen.append(change["new"]), names="value")
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 40
    _click(panel, panel.generate_button)
    run = panel.last_run
    assert run is not None and panel.error.value == ""
    final = panel.output.value
    reply = final.split("class='lmbench-reply'")[1]
    assert html.escape(run.text) in reply and "Once upon a time" not in reply, "the reply alone, not glued on"
    assert "<details class='lmbench-asked'>" in final and "Once upon a time" in final.split("</details>")[0]
    assert "lmbench-copy" in final and "navigator.clipboard.writeText" in final
    assert "flex-direction:column-reverse" in final, "kept scrolled to the newest text"
    live = [v for v in seen if "lmbench-live" in v]
    assert live and "tokens ·" in live[0], "a live token count while streaming"
    assert "lmbench-live" not in final and f"run {run.id[:8]}" in panel.stats.value


def test_the_stats_belong_to_the_run_shown(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 6
    _click(panel, panel.generate_button)
    panel.chat.input.value = "Tell me about a dog."
    _click(panel, panel.chat.send_button)
    chat_run = panel.last_run
    assert chat_run is not None and chat_run.chat_format == "plain"
    assert f"run {chat_run.id[:8]}" in panel.stats.value
    assert html.escape(chat_run.text) in panel.output.value and "Tell me about a dog." in panel.output.value


def test_errors_clear_when_the_next_action_succeeds(panel: lmbench.Panel) -> None:
    _click(panel, panel.generate_button)
    assert "prompt box is empty" in panel.error.value
    panel.prompt.value = "Once"
    panel.form.sliders["max_tokens"].value = 3
    _click(panel, panel.generate_button)
    assert panel.error.value == ""


def test_max_tokens_is_never_clamped_silently(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once"
    box = panel.form.sliders["max_tokens"]
    box.value = 99_999_999
    assert box.value == 99_999_999, "the box keeps what was typed"
    _click(panel, panel.generate_button)
    n_ctx = panel.picker.n_ctx.value
    message = html.unescape(panel.error.value)
    assert f"Max Tokens 99999999 is more than the context of {n_ctx} tokens" in message
    assert f"at most {n_ctx}" in panel.form.max_tokens_note.value
    box.value = 0
    assert box.value == 0
    _click(panel, panel.generate_button)
    assert "max_tokens" in panel.error.value
    assert lmbench.runs().empty, "nothing ran"
    spanish = lmbench.panel(panel.picker.name, lang="es")
    spanish.prompt.value = "Érase"
    spanish.form.sliders["max_tokens"].value = 10**7
    _click(spanish, spanish.generate_button)
    assert "supera el contexto" in html.unescape(spanish.error.value)
    assert "como máximo" in spanish.form.max_tokens_note.value


@pytest.mark.no_test_model
def test_make_lab_starts_as_root() -> None:
    command = (
        subprocess.run(
            ["make", "--no-print-directory", "-n", "lab"], cwd=REPO, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    shown = subprocess.run(
        ["sh", "-c", command.replace(".venv/bin/jupyter lab", "echo")], capture_output=True, text=True
    )
    assert ("--allow-root" in shown.stdout) == (os.geteuid() == 0)


def test_the_stats_line_and_the_counter_speak_spanish(model_path: Path) -> None:
    panel = lmbench.panel(str(model_path), lang="es")
    panel.prompt.value = "Érase una vez"
    panel.form.sliders["max_tokens"].value = 4
    _click(panel, panel.generate_button)
    run = panel.last_run
    assert run is not None and panel.error.value == ""
    stats = html.unescape(panel.stats.value)
    assert f"{run.prompt_tokens} tokens del prompt" in stats and "texto en bruto" in stats
    assert f"semilla {run.seed}" in stats and "prompt tokens" not in stats
    assert f"{run.prompt_tokens} tokens de {panel.engine.n_ctx} · texto en bruto" in panel.token_count.value
    assert "Copiar" in panel.output.value


def test_the_server_tabs_examples_are_the_panels_request_and_both_run(
    panel: lmbench.Panel, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    panel.prompt.value = "The little dragon"
    panel.form.sliders["temperature"].value = 0.3
    panel.form.sliders["max_tokens"].value = 7
    panel.server.port.value = 0
    panel.server.button.click()
    try:
        blocks = [html.unescape(b) for b in re.findall(r"<pre[^>]*>(.*?)</pre>", panel.server.info.value, re.S)]
        assert len(blocks) == 2
        guide, client = blocks
        assert "'prompt': 'The little dragon'" in guide and "'temperature': 0.3" in guide and "'max_tokens': 7" in guide
        assert "chat.completions.create(" in client and "max_tokens=7" in client and "print(" in client
        for example in blocks:
            exec(example, {})
            assert capsys.readouterr().out.strip(), "each example prints the generated text"
        runs = lmbench.runs(store=panel.store)
        assert runs.prompt.tolist() == ["The little dragon"] * 2 and runs.max_tokens.tolist() == [7, 7]
    finally:
        panel.server.button.click()


def test_the_chat_has_a_stop_beside_its_message_box(panel: lmbench.Panel) -> None:
    assert panel.chat.stop_button.disabled
    panel.form.sliders["max_tokens"].value = 2000
    panel.form.toggles["ignore_eos"].value = True
    panel.chat.input.value = "Tell me a long story."
    panel.chat.send_button.click()
    for _ in range(600):  # until the reply has started streaming
        if panel.chat.stop_button.disabled is False and "…" in panel.chat.shown:
            break
        panel.wait(0.05)
    panel.chat.stop_button.click()
    panel.wait(120)
    run = panel.last_run
    assert run is not None and run.finish_reason == "cancelled" and run.completion_tokens < 2000
    assert panel.chat.stop_button.disabled and panel.stop_button.disabled
