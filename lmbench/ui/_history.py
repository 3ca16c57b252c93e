"""The History tab: the latest runs of the store, restored into the panel with one click."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..errors import LmbenchError
from . import _html as view
from ._parts import Host, button, row

# Runs listed in the history tab.
HISTORY_SIZE = 25


class HistoryTab:
    """This panel's runs (or all runs in the store), newest first; selecting one restores it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.runs = w.Select(options=[], rows=10, layout=w.Layout(width="100%"))
        self.runs.add_class("lmbench-history")
        self.runs.observe(self._on_select, names="value")
        refresh = button(host.t("Refresh"), "", "Reload the history from the store", "lmbench-refresh")
        refresh.on_click(lambda _: self.refresh())
        self.all = w.Checkbox(False, description=host.t("all runs in the store (not only this panel's)"), indent=False)
        self.all.observe(lambda _: self.refresh(), names="value")
        self._restoring = False
        self._pages = 1
        self.older = button(host.t("Older runs"), "", f"Show {HISTORY_SIZE} older runs", "lmbench-older")
        self.older.on_click(lambda _: self.refresh(pages=self._pages + 1))
        self.thumbs = {}
        for verdict, icon, tip in (("up", "thumbs-up", "good"), ("down", "thumbs-down", "bad")):
            thumb = w.Button(icon=icon, tooltip=host.t(tip), layout=w.Layout(width="3em"), disabled=True)
            thumb.add_class(f"lmbench-history-{verdict}")
            thumb.on_click(lambda _, verdict=verdict: self.rate(verdict))
            self.thumbs[verdict] = thumb
        self.rated = w.HTML()
        self.box = w.VBox(
            [
                row([refresh, self.all]),
                w.HTML(view.HISTORY_HEADER),
                self.runs,
                row([*self.thumbs.values(), self.rated]),
                self.older,
            ]
        )

    def refresh(self, pages: int = 1) -> None:
        """Reload the newest ``pages`` pages of runs from the store (only those rows are read)."""
        self._pages = pages
        mine = None if self.all.value else self.host._mine
        try:  # a store of a million runs costs what the rows shown cost
            frame = self.host.store.runs(ids=mine, last=HISTORY_SIZE * pages)
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        options = [(view.history_row(r), r.id) for r in frame.iloc[::-1].itertuples()]
        self.older.disabled = len(frame) < HISTORY_SIZE * pages  # nothing older to show
        self._restoring = True
        try:
            self.runs.options = options
            self.runs.value = None
        finally:
            self._restoring = False

    def rate(self, verdict: str) -> None:
        """Thumbs up or down for the selected run, stored at once (``rating_up`` in ``lmbench.runs()``)."""
        if self.runs.value is None:
            return
        try:
            self.host.store.add_rating(self.runs.value, verdict=verdict)
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.rated.value = view.rated(self.host.t("good" if verdict == "up" else "bad"), self.runs.value)

    def _on_select(self, change: dict[str, Any]) -> None:
        for thumb in self.thumbs.values():
            thumb.disabled = change["new"] is None
        self.rated.value = ""
        if self._restoring or change["new"] is None:
            return
        try:
            run = self.host.store.get(change["new"])
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.host.restore(run)
