"""The panel in Spanish on a 1024 px screen, in a real browser (JupyterLab, headless Chromium, both themes):
nothing cut or overflowing, the Stop Strings box readable, Stop grey while disabled, ``lmbench.compare()``
headers that cannot overlap, and after a kernel restart a saved notebook that says to run the cell again.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import TEST_MODEL
from jupyterserver import running
from test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

LONG_NAME = "a-model-file-with-a-long-name-and-no-spaces-anywhere-in-it.Q8_0.gguf"
CELLS = [
    "import shutil, tempfile\nfrom pathlib import Path\nimport lmbench",
    # Two copies with long file names, and six temperatures: the compare tables the headers must fit.
    f"copies = [Path(tempfile.mkdtemp()) / f'{{i}}-{LONG_NAME}' for i in (1, 2)]\n"
    f"for copy in copies:\n    shutil.copy({str(TEST_MODEL)!r}, copy)\n"
    "by_file = [lmbench.generate('Once upon a time', model=c, max_tokens=12, seed=1) for c in copies]\n"
    "lmbench.compare([r.id for r in by_file], by='model_path')",
    "runs = [lmbench.generate('Once upon a time', max_tokens=12, seed=1, temperature=t)\n"
    "        for t in (0.1, 0.4, 0.7, 1.0, 1.3, 1.6)]\n"
    "lmbench.compare([r.id for r in runs], by='temperature')",
    'panel = lmbench.panel(lang="es")\npanel',
]
# Text that does not fit its box: labels, buttons, tab and accordion titles, cut with an ellipsis.
CUT = """el => [...el.querySelectorAll(
  'label, button, .widget-label, .lm-TabBar-tabLabel, .lm-AccordionPanel-title, .jp-Collapse-header')]
  .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
  .map(e => `${e.className}: ${e.innerText.trim()} (${e.scrollWidth} > ${e.clientWidth})`)"""
# Header (and cell) boxes of a table that overlap their neighbour or overflow their own box.
OVERLAP = """table => {
  const cells = [...table.querySelectorAll('tr')].map(tr => [...tr.children]);
  const bad = [];
  for (const row of cells) {
    row.forEach((c, i) => {
      if (c.scrollWidth > c.clientWidth + 1) bad.push(`overflows: ${c.innerText.slice(0, 40)}`);
      const next = row[i + 1];
      if (next && c.getBoundingClientRect().right > next.getBoundingClientRect().left + 1)
        bad.push(`overlaps: ${c.innerText.slice(0, 40)}`);
    });
  }
  return bad;
}"""


def _notebook(root: Path) -> str:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / "spanish.ipynb")
    return "spanish.ipynb"


def _kernel_idle(page: object) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
        timeout=120_000,
    )


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_the_spanish_panel_fits_1024px_and_survives_a_restart(tmp_path: Path, lmbench_home: Path, theme: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make setup does) or set LMBENCH_CHROMIUM")
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    name = _notebook(root)
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    tag = theme.split()[-1].lower()
    with running(tmp_path, lmbench_home, root) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1024, "height": 1400})
        try:
            page.goto(f"{server.url}/lab/tree/{name}?token={server.token}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _kernel_idle(page)
            page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
            light = "true" if theme.endswith("Light") else "false"
            page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel = page.locator(".lmbench-panel")
            expect(panel).to_be_visible(timeout=180_000)

            # lmbench.compare(): no header or cell runs over its neighbour, whatever the values.
            tables = page.locator("table.lmbench-compare")
            expect(tables).to_have_count(2, timeout=60_000)
            for i in range(2):
                assert tables.nth(i).evaluate(OVERLAP) == [], f"compare table {i} at 1024 px"
            tables.first.screenshot(path=str(shots / f"{tag}-compare-1024px.png"))

            # One generation, so the stats line, the counter and the model line are all there.
            panel.locator(".lmbench-prompt textarea").fill("Érase una vez un dragón")
            panel.locator(".lmbench-prompt textarea").press("Control+Enter")
            expect(panel.locator(".lmbench-stats")).to_contain_text("fin:", timeout=60_000)
            expect(panel.locator(".lmbench-token-count")).to_contain_text("tokens de")
            expect(panel.locator(".lmbench-model-info")).to_contain_text("modelo: stories260K")
            for title in panel.locator(".lm-AccordionPanel-title, .jp-Collapse-header").all():
                title.click()  # open the load settings and the JSON schema box: they are measured too
            page.wait_for_timeout(500)
            for tab in ("Salida", "Registro", "Depuración"):
                panel.locator(".lm-TabBar-tab", has_text=tab).first.click()
                page.wait_for_timeout(200)
                cut = panel.evaluate(CUT)
                assert cut == [], f"nothing cut at 1024 px in Spanish ({tab}): {cut}"
            panel.locator(".lm-TabBar-tab", has_text="Salida").first.click()
            cut = panel.evaluate(CUT)
            assert cut == [], f"nothing cut at 1024 px in Spanish: {cut}"
            too_wide = panel.evaluate(
                "el => [...el.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right >"
                " el.getBoundingClientRect().right + 1 && e.offsetParent !== null).map(e => e.className).slice(0, 5)"
            )
            assert too_wide == [], f"nothing wider than the panel: {too_wide}"

            # The Stop Strings box is wide enough to read; Stop is grey (not red) while it is disabled.
            stop_strings = panel.locator(".lmbench-stop-strings").bounding_box()
            assert stop_strings is not None and stop_strings["width"] >= 300, stop_strings
            stop = panel.locator("button.lmbench-stop")
            expect(stop).to_be_disabled()
            assert "mod-danger" not in (stop.get_attribute("class") or "")
            generate = panel.locator("button.lmbench-generate")
            grey, blue = (b.evaluate("e => getComputedStyle(e).backgroundColor") for b in (stop, generate))
            assert grey != blue and "244, 67, 54" not in grey, f"disabled Stop is {grey}"
            expect(page.locator(".lmbench-restart-note")).to_be_hidden(), "the note hides beside a live panel"
            panel.screenshot(path=str(shots / f"{tag}-es-1024px.png"))

            # Saved, kernel restarted, opened again: a note says to run the cell again.
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function(
                "!window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000, polling=200
            )
            page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            _kernel_idle(page)
            page.reload()
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _kernel_idle(page)
            note = page.locator(".lmbench-restart-note")
            expect(note).to_be_visible(timeout=60_000)
            expect(note).to_contain_text("ejecuta de nuevo esta celda")
            assert page.locator(".lmbench-panel").count() == 0
            note.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / f"{tag}-after-restart.png"))
        finally:
            browser.close()
