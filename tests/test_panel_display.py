"""How the panel looks when it cannot act: Stop while nothing runs, and a notebook opened after its kernel stopped."""

from __future__ import annotations

import time
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output

import lmbench

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_stop_is_red_only_while_there_is_something_to_stop(model_path: Path) -> None:
    panel = lmbench.panel(str(model_path))
    stops = (panel.stop_button, panel.chat.stop_button)
    assert all(stop.disabled and stop.button_style == "" for stop in stops), "grey while nothing runs"
    panel.picker.n_ctx.value = 4096
    panel.form.sliders["max_tokens"].value = 4000
    panel.prompt.value = "Once upon a time"
    panel.generate_button.click()
    try:
        assert all(not stop.disabled and stop.button_style == "danger" for stop in stops), "red while it runs"
        deadline = time.monotonic() + 60
        while "lmbench-live" not in panel.output.value and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        panel.stop_button.click()
        panel.wait(60)
    assert panel.last_run is not None and panel.last_run.finish_reason == "cancelled"
    assert all(stop.disabled and stop.button_style == "" for stop in stops), "grey again once stopped"


def test_the_panel_leaves_a_note_for_the_notebook_opened_after_its_kernel_stopped(model_path: Path) -> None:
    InteractiveShell.instance()
    for lang, words in (("en", "run this cell again"), ("es", "ejecuta de nuevo esta celda")):
        panel = lmbench.panel(str(model_path), lang=lang)
        with capture_output() as shown:
            display(panel)
        widget, note = (output.data for output in shown.outputs)
        assert WIDGET in widget and widget[WIDGET]["model_id"] == panel.widget.model_id
        assert words in note["text/html"]
        assert ".jp-OutputArea:has(.lmbench-panel) .lmbench-restart-note{display:none}" in note["text/html"], (
            "hidden beside the live panel"
        )
