"""What the panel's parts share: the ``Host`` interface the panel lends them, buttons, rows and streaming.

Each part (the model picker, the parameters form, the History, Compare, Chat and Server tabs, one module
each) owns its widgets (``box`` is what the panel shows) and its one job; the panel composes them and lends
what they share through ``Host``: its store and language, its worker (start, cancel, load the model), the
generation values, and where runs are shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as w

from .._prompting import Turn
from ..engine._engine import Engine
from ..run import Run
from ..serve._settings import Settings
from ..store._store import Store

# Streamed text reaches the front end at most this often, however fast the model is.
STREAM_INTERVAL_S = 0.05


class Host(Protocol):
    """What the tabs use of the panel."""

    store: Store
    cancel: threading.Event
    _mine: set[str]

    def t(self, text: str) -> str: ...
    def start(self, job: Callable[[], None]) -> None: ...
    def load(self) -> Engine: ...
    def values(self) -> dict[str, Any]: ...
    def recorded(self, fn: Callable[..., Run], first: Any, engine: Engine, **options: Any) -> Run: ...
    def made(self, run: Run) -> None: ...
    def show_run(self, run: Run) -> None: ...
    def restore(self, run: Run) -> None: ...
    def event(self, message: str) -> None: ...
    def show_error(self, exc: BaseException) -> None: ...
    def server_settings(self, api_key: str | None) -> Settings: ...
    def status(self, text: str) -> None: ...
    def prompt_text(self) -> str: ...
    def turn(self, engine: Engine) -> Turn: ...
    def experiment_name(self) -> str | None: ...


def button(text: str, style: str, tooltip: str, css: str) -> w.Button:
    made = w.Button(description=text, button_style=style, tooltip=tooltip, layout=w.Layout(width="8em"))
    made.add_class(css)
    return made


def row(children: list[w.Widget]) -> w.HBox:
    """Widgets side by side, wrapping onto the next line when the notebook is narrow (1024 px screens)."""
    return w.HBox(children, layout=w.Layout(flex_flow="row wrap"))


class Throttled:
    """An ``on_token`` callback that collects the text and shows it at most every ``STREAM_INTERVAL_S``."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show
        self._parts: list[str] = []
        self._shown = 0.0
        self._first: float | None = None
        self._last = 0.0

    def __call__(self, piece: str) -> None:
        self._parts.append(piece)
        now = self._last = time.monotonic()
        if self._first is None:
            self._first = now
        if now - self._shown >= STREAM_INTERVAL_S:
            self._shown = now
            self._show(self.text)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def count(self) -> int:
        """Pieces heard so far (one per generated token)."""
        return len(self._parts)

    @property
    def rate(self) -> float | None:
        """Tokens per second after the first, as the run's ``tokens_per_s`` measures it (None before two)."""
        if self._first is None or len(self._parts) < 2 or self._last <= self._first:
            return None
        return (len(self._parts) - 1) / (self._last - self._first)


def folded(widget: w.Widget, title: str) -> w.Accordion:
    box = w.Accordion([widget], titles=(title,))
    box.selected_index = None
    return box
