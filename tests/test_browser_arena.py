"""A person's arena in a real browser: JupyterLab, notebooks/arena.ipynb, ten votes by keyboard, a kernel restart.

Like ``test_browser.py``: Debian's ``chromium`` driven by Playwright through ``executable_path``.
The person prefers the colder of two outputs; the test knows which run is which through the pair
marker the page carries (the person sees only A and B), and checks the votes survive a kernel
restart and rank the temperatures coldest first. Screenshots in both themes go to
test-artifacts/screenshots/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyterserver
import pytest
from conftest import REPO
from test_browser import CHROMIUM, CHROMIUM_ARGS, CONTRAST, SCREENSHOTS

import lmbench

VOTES = 10


@pytest.fixture
def arena_notebook(tmp_path: Path, lmbench_home: Path) -> Iterator[str]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "arena.ipynb", root)
    with jupyterserver.running(tmp_path, lmbench_home, root) as server:
        yield f"{server.url}/lab/tree/arena.ipynb?token={server.token}"


def _idle(page: Any) -> None:
    page.wait_for_function(
        "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'", timeout=120_000
    )


def _theme(page: Any, theme: str) -> None:
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
    light = "true" if theme.endswith("Light") else "false"
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=60_000)
    page.wait_for_timeout(500)


def test_ten_keyboard_votes_survive_a_kernel_restart_and_rank_the_settings(arena_notebook: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make setup does) or set LMBENCH_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(arena_notebook)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _idle(page)
            _theme(page, "JupyterLab Light")
            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's question about its news feed
            if news.count():
                news.first.click()
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            arena = page.locator(".lmbench-arena")
            expect(arena).to_be_visible(timeout=180_000)
            progress = arena.locator(".lmbench-arena-progress")
            expect(progress).to_contain_text(f"1 of {VOTES} pairs", timeout=60_000)
            _idle(page)

            temperature = {run.id[:8]: run.temperature for run in lmbench.runs("arena").itertuples()}
            assert len(temperature) == 12, "3 temperatures x 2 prompts x 2 seeds"
            arena.click(position={"x": 5, "y": 5})  # the arena takes the keys (it also takes focus when shown)
            for n in range(VOTES):
                marker = arena.locator("[data-lm-pair]").get_attribute("data-lm-pair")
                assert marker is not None
                _, left, right = marker.split("-")
                assert temperature[left] != temperature[right]
                page.keyboard.press("1" if temperature[left] < temperature[right] else "2")
                if n + 1 < VOTES:
                    expect(progress).to_contain_text(f"{n + 2} of {VOTES} pairs", timeout=30_000)
                if n == 4:  # halfway: the arena as a person sees it, in both themes
                    for theme in ("JupyterLab Light", "JupyterLab Dark"):
                        _theme(page, theme)
                        text = arena.locator(".lmbench-arena-left div").last
                        assert text.evaluate(CONTRAST) >= 4.5, f"the outputs read well in {theme}"
                        name = theme.split()[-1].lower()
                        arena.screenshot(path=str(SCREENSHOTS / f"{name}-arena.png"))
                        page.locator(".lmbench-rate").screenshot(path=str(SCREENSHOTS / f"{name}-rate.png"))
                    arena.click(position={"x": 5, "y": 5})
            expect(progress).to_contain_text("Done", timeout=30_000)
            expect(arena.locator(".lmbench-arena-ranking")).to_be_visible()
            assert len(lmbench.ratings()) == VOTES

            # The kernel restarts; the same notebook again finds every vote and resumes (here: done).
            page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            page.wait_for_timeout(1000)
            _idle(page)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(2000)
            _idle(page)
            progress = page.locator(".lmbench-arena .lmbench-arena-progress")
            expect(progress).to_contain_text(f"Done · {VOTES} of {VOTES} pairs", timeout=120_000)
            ranking = page.locator(".lmbench-arena .lmbench-arena-ranking")
            expect(ranking).to_be_visible()
            page.locator(".lmbench-arena").screenshot(path=str(SCREENSHOTS / "dark-arena-done.png"))
        finally:
            browser.close()

    votes = lmbench.ratings()
    assert len(votes) == VOTES and set(votes.verdict) <= {"a", "b"} and votes.session.nunique() == 1
    scores = lmbench.arena_scores(lmbench.runs("arena"), by="temperature")
    assert scores.temperature.tolist() == [0.0, 0.8, 1.6], "the person's preference, recovered"
    assert scores.win_rate.iloc[0] == 1.0 and scores.win_rate.iloc[-1] == 0.0
