"""The Chat tab as a person uses it in a real browser (JupyterLab, quickstart.ipynb, headless Chromium, both
themes): copy a message, edit it and send it again, delete one, save the conversation by name, and answer a
tool call from its card's JSON box. Screenshots go to test-artifacts/screenshots/ (``<theme>-chat-*.png``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyterserver
import pytest
from conftest import REPO, WEATHER_TOOL
from test_browser import CHROMIUM, CHROMIUM_ARGS, CONTRAST, SCREENSHOTS

import lmbench

TOO_WIDE = (
    "el => [...el.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right >"
    " el.getBoundingClientRect().right + 1 && e.offsetParent !== null).map(e => e.className).slice(0, 5)"
)


@pytest.fixture
def quickstart(tmp_path: Path, lmbench_home: Path) -> Iterator[str]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", root)
    with jupyterserver.running(tmp_path, lmbench_home, root) as server:
        yield f"{server.url}/lab/tree/quickstart.ipynb?token={server.token}"


def _open_panel(page: Any, url: str, theme: str) -> Any:
    page.goto(url)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(
        "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'", timeout=120_000
    )
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
    light = "true" if theme.endswith("Light") else "false"
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return page.locator(".lmbench-panel")


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_chat_messages_saved_conversations_and_tool_calls_in_chromium(quickstart: str, theme: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make setup does) or set LMBENCH_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    shot = SCREENSHOTS / theme.split()[-1].lower()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        try:
            panel = _open_panel(page, quickstart, theme)
            expect(panel).to_be_visible(timeout=120_000)
            panel.locator(".lmbench-param-max_tokens input").fill("12")
            panel.locator(".lmbench-param-max_tokens input").press("Enter")
            panel.locator(".lm-TabBar-tab", has_text="Chat").first.click()
            chat = panel.locator(".lmbench-chat")
            box = panel.locator(".lmbench-chat-input textarea")
            notes = chat.locator(".lmbench-chat-note")

            box.fill("Tell me about a dog.")
            box.press("Enter")
            expect(notes).to_have_count(1, timeout=60_000)
            box.fill("And then?")
            box.press("Enter")
            expect(notes).to_have_count(2, timeout=60_000)
            messages = chat.locator(".lmbench-chat-message")
            expect(messages).to_have_count(4)

            # Copy: the reply's own text lands on the clipboard.
            reply = messages.nth(1).locator(".lmbench-chat-assistant")
            messages.nth(1).locator("button.lmbench-chat-copy").click()
            copied = page.evaluate("navigator.clipboard.readText()")
            # Compared by words: a line break of the reply may show as a space.
            assert copied.strip() and " ".join(copied.split()) in " ".join(reply.inner_text().split())

            # Edit the first question and send it again: it and what followed are replaced.
            messages.nth(0).locator("button.lmbench-chat-edit").click()
            expect(box).to_have_value("Tell me about a dog.")
            expect(panel.locator(".lmbench-chat-editing")).to_have_count(1)
            box.fill("Tell me about a cat.")
            box.press("Enter")
            expect(messages).to_have_count(2, timeout=60_000)
            expect(chat).to_contain_text("Tell me about a cat.")
            expect(chat).not_to_contain_text("Tell me about a dog.")

            # Delete the reply, ask again, save the conversation by name.
            messages.nth(1).locator("button.lmbench-chat-delete").click()
            expect(messages).to_have_count(1)
            panel.locator("button.lmbench-regenerate").click()  # no reply to regenerate: a clear error
            expect(panel.locator(".lmbench-error")).to_contain_text("no reply to regenerate")
            box.fill("What next?")
            box.press("Enter")
            expect(messages).to_have_count(3, timeout=60_000)
            panel.locator(".lmbench-chat-name input").fill("cat story")
            panel.locator("button.lmbench-chat-save").click()
            expect(panel.locator(".lmbench-chat-saved select")).to_contain_text("cat story", timeout=30_000)
            page.wait_for_timeout(300)
            assert chat.evaluate(CONTRAST) >= 4.5, "the transcript reads well in this theme"
            panel.screenshot(path=str(shot) + "-chat-messages.png")

            # A tool call: its card shows the name and arguments; a JSON result goes back, the model continues.
            panel.locator("button.lmbench-new-chat").click()
            tools_box = panel.locator(".lmbench-chat-tools-box")
            tools_box.get_by_text("Tools", exact=True).click()
            panel.locator(".lmbench-chat-tools textarea").fill(json.dumps([WEATHER_TOOL]))
            panel.locator(".lmbench-tool-choice select").select_option("required")
            panel.locator(".lmbench-tool-parallel input[type=checkbox]").uncheck()
            panel.locator(".lmbench-param-max_tokens input").fill("150")  # about a character a token
            panel.locator(".lmbench-param-max_tokens input").press("Enter")
            box.fill("What is the weather in Paris?")
            box.press("Enter")
            card = panel.locator(".lmbench-tool-card")
            expect(card).to_have_count(1, timeout=60_000)
            expect(card).to_contain_text("get_weather")
            expect(card).to_contain_text('"city"')
            assert card.evaluate(CONTRAST) >= 4.5, "the call card reads well in this theme"
            result = panel.locator(".lmbench-tool-result textarea")
            result.fill("sunny?")
            panel.locator("button.lmbench-tool-send").click()
            expect(panel.locator(".lmbench-error")).to_contain_text("must be JSON")
            result.fill('{"temperature_c": 18, "sky": "sunny"}')
            panel.locator(".lmbench-tool-choice select").select_option("none")
            panel.locator("button.lmbench-tool-send").click()
            expect(chat.locator(".lmbench-chat-tool")).to_contain_text("sunny", timeout=60_000)
            expect(notes).to_have_count(2, timeout=60_000)
            expect(card).to_have_count(0)
            page.wait_for_timeout(300)
            panel.screenshot(path=str(shot) + "-chat-tools.png")

            page.set_viewport_size({"width": 1024, "height": 1800})
            page.wait_for_timeout(500)
            assert panel.evaluate(TOO_WIDE) == [], "the Chat tab holds at 1024 px"
            panel.screenshot(path=str(shot) + "-chat-1024px.png")
        finally:
            browser.close()

    store = lmbench.get_store()
    saved = store.conversation("cat story")
    assert [m["content"] for m in saved.messages if m["role"] == "user"] == ["Tell me about a cat.", "What next?"]
    table = store.runs()
    chat_runs = table[table.source == "panel"]
    assert chat_runs.conversation_id.notna().all() and chat_runs.conversation_id.nunique() == 2
    called = store.get(chat_runs.id.iloc[-2])
    assert called.tool_calls and called.tool_calls[0]["function"]["name"] == "get_weather"
