"""The History tab: the latest runs of the store, restored into the panel with one click."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import pandas as pd

from ..errors import LmbenchError
from . import _html as view
from ._parts import Host, button, row

# Runs listed in the history tab.
HISTORY_SIZE = 25
# The value of a conversation's line in the list: this, then the id of its newest turn.
GROUP = "conversation:"


class HistoryTab:
    """This panel's runs (or all runs in the store), newest first; selecting one restores it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.runs = w.Select(options=[], rows=10, layout=w.Layout(width="100%"))
        self.runs.add_class("lmbench-history")
        self.runs.observe(self._on_select, names="value")
        refresh = button(host.t("Refresh"), "", host.t("Reload the history from the store"), "lmbench-refresh")
        refresh.on_click(lambda _: self.refresh())
        self.all = w.Checkbox(False, description=host.t("all runs in the store (not only this panel's)"), indent=False)
        self.all.observe(lambda _: self.refresh(), names="value")
        self._restoring = False
        self._pages = 1
        self._saved: dict[str, str] = {}  # a saved conversation's line in the list -> its name
        # Set by the panel: reopens a saved conversation (chosen by its line) in the Chat tab.
        self.on_conversation: Callable[[str], None] | None = None
        self.older = button(
            host.t("Older runs"), "", host.t("Show {n} older runs").format(n=HISTORY_SIZE), "lmbench-older"
        )
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
                w.HTML(view.history_header(host.t)),
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
        options = self._grouped(frame)
        self.older.disabled = len(frame) < HISTORY_SIZE * pages  # nothing older to show
        self._restoring = True
        try:
            self.runs.options = options
            self.runs.value = None
        finally:
            self._restoring = False

    def _grouped(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        """The runs newest first, a conversation's turns together under a line naming it (its saved name, else
        its first question) where its newest turn is; selecting that line reopens a saved conversation in
        the Chat tab, else restores its newest turn."""
        try:
            saves = self.host.store.conversations()
        except LmbenchError as exc:
            self.host.show_error(exc)
            saves = pd.DataFrame(columns=["id", "name"])
        names = dict(zip(saves["id"], saves["name"], strict=True))  # the newest save names a conversation
        newest_first = list(frame.iloc[::-1].itertuples())
        turns: dict[str, list[Any]] = {}
        for r in newest_first:
            if isinstance(r.conversation_id, str):
                turns.setdefault(r.conversation_id, []).append(r)
        options: list[tuple[str, str]] = []
        self._saved = {}
        for r in newest_first:
            conversation = r.conversation_id if isinstance(r.conversation_id, str) else None
            if conversation is None:
                options.append((view.history_row(r, self.host.t), r.id))
            elif conversation in turns:
                grouped = turns.pop(conversation)
                title = names.get(conversation) or repr(str(grouped[-1].prompt)[:40])
                count = self.host.t("{n} turns").format(n=len(grouped))
                options.append((f"💬 {title} · {count}", f"{GROUP}{grouped[0].id}"))
                if conversation in names:
                    self._saved[f"{GROUP}{grouped[0].id}"] = names[conversation]
                options += [(f"↳ {view.history_row(turn, self.host.t)}", turn.id) for turn in grouped]
        return options

    def rate(self, verdict: str) -> None:
        """Thumbs up or down for the selected run, stored at once (``rating_up`` in ``lmbench.runs()``)."""
        if self.runs.value is None:
            return
        try:
            self.host.store.add_rating(self.runs.value.removeprefix(GROUP), verdict=verdict)
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
        name = self._saved.get(change["new"])
        try:
            if name is not None and self.on_conversation is not None:
                self.on_conversation(name)
                return
            run = self.host.store.get(change["new"].removeprefix(GROUP))
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.host.restore(run)
