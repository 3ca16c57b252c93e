"""The Compare tab as a person uses it in a real browser (JupyterLab, quickstart.ipynb, headless Chromium, both
themes, and in Spanish): columns that fill while they generate, the prompt once as typed, metrics by their
names in words, presets compared; the Compare and Chat tabs hold at 1024 px. Screenshots go to
test-artifacts/screenshots/ (``<theme>[-es]-compare-*.png``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import jupyterserver
import pytest
from conftest import REPO
from test_browser import CHROMIUM, CHROMIUM_ARGS, CONTRAST, SCREENSHOTS
from test_browser_chat import TOO_WIDE, _open_panel

import lmbench

PROMPT = "Once upon a time, in a small village by the sea, there lived a fisherman who"


# The words the test reads, by panel language.
WORDS = {
    "en": {
        "Compare": "Compare",
        "Chat": "Chat",
        "Ignore EOS": "Ignore EOS",
        "metric": "distinct word pairs",
        "generating": "generating",
    },
    "es": {
        "Compare": "Comparar",
        "Chat": "Chat",
        "Ignore EOS": "Ignorar EOS",
        "metric": "pares de palabras distintos",
        "generating": "generando",
    },
}
CASES = [("JupyterLab Light", "en"), ("JupyterLab Dark", "en"), ("JupyterLab Light", "es")]


@pytest.fixture
def quickstart(
    tmp_path: Path, lmbench_home: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("LMBENCH_LANG", request.node.callspec.params["case"][1])  # the kernel's panel language
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", root)
    with jupyterserver.running(tmp_path, lmbench_home, root) as server:
        yield f"{server.url}/lab/tree/quickstart.ipynb?token={server.token}"


@pytest.mark.parametrize("case", CASES, ids=["light", "dark", "spanish"])
def test_compare_columns_stream_and_compare_presets_in_chromium(quickstart: str, case: tuple[str, str]) -> None:
    theme, lang = case
    words = WORDS[lang]
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make setup does) or set LMBENCH_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    shot = SCREENSHOTS / (theme.split()[-1].lower() + ("" if lang == "en" else f"-{lang}"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            panel = _open_panel(page, quickstart, theme)
            expect(panel).to_be_visible(timeout=120_000)
            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's question about its news feed
            if news.count():
                news.first.click()
            panel.locator(".lmbench-prompt textarea").fill(PROMPT)
            max_tokens = panel.locator(".lmbench-param-max_tokens input")
            max_tokens.fill("1500")
            max_tokens.press("Enter")
            panel.locator(".widget-checkbox", has_text=words["Ignore EOS"]).locator("input").check()  # long texts
            panel.locator(".lm-TabBar-tab", has_text=words["Compare"]).first.click()
            output = panel.locator(".lmbench-compare-output")

            # Three temperatures: the columns show text while they are still generating; Stop ends them.
            panel.locator(".lmbench-compare-values input").fill("0.2, 0.7, 1.2")
            panel.locator("button.lmbench-compare").click()
            expect(output.locator(".lmbench-compare-column")).to_have_count(3, timeout=60_000)
            page.wait_for_function(
                "([el, word]) => [...el.querySelectorAll('.lmbench-compare-text')].every(t => t.innerText.length > 40)"
                " && el.innerText.includes(word)",
                arg=[output.element_handle(), words["generating"]],
                timeout=60_000,
                polling=50,
            )
            panel.locator("button.lmbench-stop").click()
            expect(output).not_to_contain_text(words["generating"], timeout=60_000)
            expect(output.locator(".lmbench-compare-prompt")).to_contain_text(PROMPT)
            assert output.inner_text().count(PROMPT) == 1, "the prompt once, as typed"
            expect(output).to_contain_text("temperature = 0.7")
            expect(output).to_contain_text(words["metric"])
            expect(output).not_to_contain_text("distinct_2")
            assert output.locator(".lmbench-compare-text").first.evaluate(CONTRAST) >= 4.5
            panel.screenshot(path=str(shot) + "-compare-temperature.png")

            # Presets, side by side.
            max_tokens.fill("30")
            max_tokens.press("Enter")
            panel.locator(".lmbench-compare-mode select").select_option("presets")
            expect(panel.locator(".lmbench-compare-param")).to_be_hidden()  # the kernel took the mode
            expect(panel.locator(".lmbench-compare-values input")).to_have_value("precise, creative")
            panel.locator("button.lmbench-compare").click()
            expect(output.locator(".lmbench-compare-column")).to_have_count(2, timeout=60_000)
            expect(output).to_contain_text("creative")
            expect(output).not_to_contain_text(words["generating"], timeout=60_000)
            panel.screenshot(path=str(shot) + "-compare-presets.png")

            page.set_viewport_size({"width": 1024, "height": 1800})
            page.wait_for_timeout(500)
            assert panel.locator(".lmbench-compare-tab").evaluate(TOO_WIDE) == [], "the Compare tab holds at 1024 px"
            panel.screenshot(path=str(shot) + "-compare-1024px.png")
            panel.locator(".lm-TabBar-tab", has_text=words["Chat"]).first.click()
            chat_tab = panel.locator(".lmbench-chat-tab")
            chat_tab.locator(".lmbench-chat-tools-box").get_by_text(
                "Tools" if lang == "en" else "Herramientas", exact=True
            ).click()
            page.wait_for_timeout(300)
            assert chat_tab.evaluate(TOO_WIDE) == [], "the Chat tab holds at 1024 px"
            panel.screenshot(path=str(shot) + "-chat-1024px.png")
        finally:  # the page as it was last, for a person (and for a failure's reason)
            page.screenshot(path=str(shot) + "-compare-last.png", full_page=True)
            browser.close()

    table = lmbench.runs()
    compared = table[table.source == "panel"]
    assert sorted(compared.temperature[:3]) == [0.2, 0.7, 1.2] and set(compared.finish_reason[:3]) == {"cancelled"}
    assert sorted(compared.temperature[3:]) == [0.2, 1.2], "precise and creative"
    assert compared.seed.iloc[:3].nunique() == 1 and compared.seed.iloc[3:].nunique() == 1
