"""End to end in a real browser: JupyterLab on 127.0.0.1, quickstart.ipynb in headless Chromium (Playwright).

Needs Debian's ``chromium`` (``make setup`` installs it where it can; ``LMBENCH_CHROMIUM`` names
another binary). Playwright drives it through ``executable_path``: no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import jupyterserver
import pytest
from conftest import REPO

import lmbench

CHROMIUM = os.environ.get("LMBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags these machines need: no sandbox as root, and no background calls to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def jupyterlab(tmp_path: Path, lmbench_home: Path) -> Iterator[str]:
    """JupyterLab serving a copy of the quickstart notebook; the notebook's URL."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", root)
    with jupyterserver.running(tmp_path, lmbench_home, root) as server:
        yield f"{server.url}/lab/tree/quickstart.ipynb?token={server.token}"


# Screenshots of every tab in both themes, for a person to look at (CI keeps the folder; git ignores it).
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
TABS = ("Output", "History", "Log", "Debug", "Compare", "Chat", "Server")
CONTRAST = """el => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let node = el, bg = [255, 255, 255];
  while (node) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) { bg = c; break; }
    node = node.parentElement;
  }
  const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(bg)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_quickstart_panel_in_chromium(jupyterlab: str, tmp_path: Path, theme: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make setup does) or set LMBENCH_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            page.goto(jupyterlab)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_function(
                "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'",
                timeout=120_000,
            )
            page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
            light = "true" if theme.endswith("Light") else "false"
            page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            panel = page.locator(".lmbench-panel")
            expect(panel).to_be_visible(timeout=120_000)
            expect(page.locator(".jp-OutputArea-output .lmbench-run").first).to_be_visible()

            # A prompt typed into the panel, Ctrl+Enter (Generate), streamed text, then the stats line.
            prompt = "The little dragon"
            prompt_box = panel.locator(".lmbench-prompt textarea")
            prompt_box.fill(prompt)
            prompt_box.press("Control+Enter")
            stats = panel.locator(".lmbench-stats")
            expect(stats).to_contain_text("finish:", timeout=60_000)
            for part in ("prompt tokens", "completion tokens", "TTFT", "tok/s", "seed"):
                expect(stats).to_contain_text(part)
            output = panel.locator(".lmbench-output")
            expect(output).to_contain_text(prompt)  # folded above the reply, as asked
            expect(output.locator("button.lmbench-copy")).to_be_visible()
            expect(output.locator(".lmbench-reply")).to_be_visible()
            assert len(output.inner_text()) > len(prompt) + 20

            # A long generation (context 16384, max tokens 16000), stopped once text is streaming.
            panel.locator(".jp-Collapse-header, .lm-AccordionPanel-title, .widget-accordion").first.click()
            context = panel.locator(".widget-inline-hbox:has(label:text('context length')) input")
            context.fill("16384")
            context.press("Enter")
            max_tokens = panel.locator(".lmbench-param-max_tokens input")
            max_tokens.fill("16000")  # never clamped; the kernel checks it against the context at Generate
            max_tokens.press("Enter")
            expect(max_tokens).to_have_value("16000")
            expect(panel.locator(".lmbench-max-tokens-note")).to_contain_text("16384", timeout=30_000)
            panel.locator("button.lmbench-generate").click()
            expect(panel.locator("button.lmbench-stop")).to_be_enabled(timeout=30_000)
            page.wait_for_function(
                "el => el.innerText.length > 400", arg=output.element_handle(), timeout=60_000, polling=50
            )
            panel.locator("button.lmbench-stop").click()
            expect(stats).to_contain_text("finish: cancelled", timeout=60_000)
            assert output.evaluate(CONTRAST) >= 4.5, "the output reads well in this theme"
            page.screenshot(path=str(tmp_path / "quickstart-panel.png"), full_page=True)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for tab in TABS:  # every tab, as a person sees it in this theme
                panel.locator(".lm-TabBar-tab", has_text=tab).first.click()
                page.wait_for_timeout(300)
                panel.screenshot(path=str(SCREENSHOTS / f"{theme.split()[-1].lower()}-{tab.lower()}.png"))
            debug = panel.locator(".lmbench-debug span").first
            assert debug.evaluate(CONTRAST) >= 4.5, "coloured tokens stay readable in this theme"
            page.set_viewport_size({"width": 1024, "height": 1800})  # a small laptop screen
            page.wait_for_timeout(500)
            too_wide = panel.evaluate(
                "el => [...el.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right >"
                " el.getBoundingClientRect().right + 1 && e.offsetParent !== null).map(e => e.className).slice(0, 5)"
            )
            assert too_wide == [], f"the layout holds at 1024 px; too wide: {too_wide}"
            panel.screenshot(path=str(SCREENSHOTS / f"{theme.split()[-1].lower()}-1024px.png"))

            # Chat: Shift+Enter adds a line, Enter sends (Stop ends the long reply); the reply says what it cost.
            panel.locator(".lm-TabBar-tab", has_text="Chat").first.click()
            chat_box = panel.locator(".lmbench-chat-input textarea")
            chat_box.fill("Tell me a story.")
            chat_box.press("Shift+Enter")
            assert chat_box.input_value() == "Tell me a story.\n"
            chat_box.press("Enter")
            expect(panel.locator("button.lmbench-stop")).to_be_enabled(timeout=30_000)
            panel.locator("button.lmbench-stop").click()
            expect(panel.locator(".lmbench-chat-assistant .lmbench-chat-note")).to_contain_text(
                "tokens", timeout=60_000
            )
            assert chat_box.input_value() == "", "sent, and the box emptied"
        finally:
            browser.close()

    table = lmbench.runs()
    panel_runs = table[table.source == "panel"]
    assert list(panel_runs.finish_reason)[-1] == "cancelled"
    assert 0 < panel_runs.completion_tokens.iloc[-1] < 16000 and panel_runs.max_tokens.iloc[-1] == 16000
    assert panel_runs.prompt.iloc[0] == prompt and panel_runs.finish_reason.iloc[0] in ("stop", "length")
    assert (tmp_path / "quickstart-panel.png").stat().st_size > 10_000
