"""The panel's tabs that do a job of their own: History, Compare, Chat and Server.

Each owns its widgets (``box`` is what the panel shows) and its one job; the panel composes them
and lends what they share through the small ``Host`` interface: its store and language, its
worker (start, cancel, load the model), the generation values, and where runs are shown.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import ipywidgets as w

from . import _panel_html as view
from .api import Settings
from .chat import chat
from .compare import compare
from .engine import Engine
from .errors import LmbenchError, ParameterError
from .generation import Job, Recorder, execute_many, random_seed
from .params import validate_params
from .run import Labels, Run
from .server import Server
from .store import Store

# Runs listed in the history tab.
HISTORY_SIZE = 25
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

    def __call__(self, piece: str) -> None:
        self._parts.append(piece)
        now = time.monotonic()
        if now - self._shown >= STREAM_INTERVAL_S:
            self._shown = now
            self._show(self.text)

    @property
    def text(self) -> str:
        return "".join(self._parts)


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
        self.box = w.VBox([row([refresh, self.all]), w.HTML(view.HISTORY_HEADER), self.runs])

    def refresh(self) -> None:
        """Reload the last runs from the store."""
        try:
            frame = self.host.store.runs()
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        if not self.all.value:
            frame = frame[frame.id.isin(self.host._mine)]
        frame = frame.iloc[-HISTORY_SIZE:]
        options = [(view.history_row(r), r.id) for r in frame.iloc[::-1].itertuples()]
        self._restoring = True
        try:
            self.runs.options = options
            self.runs.value = None
        finally:
            self._restoring = False

    def _on_select(self, change: dict[str, Any]) -> None:
        if self._restoring or change["new"] is None:
            return
        try:
            run = self.host.store.get(change["new"])
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.host.restore(run)


class CompareTab:
    """The prompt at 2 to 4 values of one parameter, decoded together with one seed, side by side."""

    def __init__(self, host: Host, numeric: list[str], kind: Callable[[str], type]) -> None:
        self.host, self._kind = host, kind
        t = host.t
        self.param = w.Dropdown(options=numeric, value="temperature", description=t("parameter"))
        self.values = w.Text("0.2, 0.7, 1.2", description=t("values"), tooltip="2 to 4 values, comma-separated")
        self.button = button(t("Compare"), "info", "Run the prompt at each value", "lmbench-compare")
        self.button.on_click(lambda _: host.start(self.job))
        self.output = w.HTML()
        self.output.add_class("lmbench-compare-output")
        self.box = w.VBox([row([self.param, self.values, self.button]), self.output])

    def job(self) -> None:
        name = self.param.value
        try:
            values = [self._kind(name)(v) for v in self.values.value.split(",") if v.strip()]
        except ValueError:
            raise ParameterError(f"compare values must be numbers separated by commas, not {self.values.value!r}",
                                 name=name, value=self.values.value) from None  # fmt: skip
        if not 2 <= len(values) <= 4:
            raise ParameterError(f"compare needs 2 to 4 values of {name}, got {len(values)}", name=name, value=values)
        params = self.host.values()
        if params["seed"] is None:  # one seed for all, so only the compared parameter differs
            params["seed"] = random_seed()
        engine = self.host.load()
        self.host.status(f"comparing {len(values)} values of {name}, decoded together…")
        labels = Labels(self.host.experiment_name(), source="panel")
        jobs = [Job(self.host.prompt_text(), validate_params({**params, name: value}), labels) for value in values]
        recorder = Recorder(self.host.store, on_run=self.host.made)
        runs, interruption = execute_many(engine, jobs, on_finished=recorder, cancel=self.host.cancel, slots=len(jobs))
        ids = [run.id for run in runs if run is not None]
        if ids:
            self.output.value = compare(ids, by=name, store=self.host.store).to_html()
        if interruption is not None:
            raise interruption


class ChatTab:
    """A conversation with the model through its chat template; each reply says what it cost."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.conversation: list[dict[str, str]] = []
        self._notes: list[str | None] = []  # one per turn: a reply's tokens, speed and ending
        self.system = w.Text(placeholder=t("system message (optional)"), layout=w.Layout(width="100%"))
        self.transcript = w.HTML()
        self.transcript.add_class("lmbench-chat")
        self.input = w.Textarea(placeholder=t("Message"), rows=2, layout=w.Layout(width="100%"))
        self.input.add_class("lmbench-chat-input")
        self.send_button = button(t("Send"), "primary", "Send the message (Enter)", "lmbench-send")
        self.send_button.on_click(lambda _: host.start(self.job))
        self.regenerate_button = button(t("Regenerate"), "", "Ask for the last reply again", "lmbench-regenerate")
        self.regenerate_button.on_click(lambda _: host.start(self.regenerate))
        new_chat = button(t("New chat"), "", "Forget the conversation", "lmbench-new-chat")
        new_chat.on_click(lambda _: self.new())
        self.render()
        self.box = w.VBox(
            [self.system, self.transcript, self.input, row([self.send_button, self.regenerate_button, new_chat])]
        )

    def job(self) -> None:
        text = self.input.value.strip()
        if not text:
            raise ParameterError("type a message first", name="messages", value=text)
        system = self.system.value.strip()
        user = {"role": "user", "content": text}
        messages = [*([{"role": "system", "content": system}] if system else []), *self.conversation, user]
        engine = self.host.load()
        self.host.status(self.host.t("replying…"))
        stream = Throttled(lambda reply: self.render(pending=(text, reply)))
        try:
            run = self.host.recorded(chat, messages, engine, on_token=stream, **self.host.values())
        except BaseException:
            self.render()
            raise
        self.host.made(run)
        self.conversation += [user, {"role": "assistant", "content": run.text.strip()}]
        self._notes += [None, view.reply_note(run)]
        self.input.value = ""
        self.render()
        self.host.show_run(run)

    def regenerate(self) -> None:
        """Drop the last reply and ask again (a new seed unless the seed is fixed)."""
        if len(self.conversation) < 2 or self.conversation[-1]["role"] != "assistant":
            raise ParameterError("there is no reply to regenerate yet", name="messages")
        question = self.conversation[-2]["content"]
        del self.conversation[-2:], self._notes[-2:]
        self.input.value = question
        self.job()

    def new(self) -> None:
        """Forget the conversation (its runs stay in the store)."""
        self.conversation, self._notes = [], []
        self.render()

    def render(self, pending: tuple[str, str] | None = None) -> None:
        turns: list[tuple[str, str, str | None]] = [
            (m["role"], m["content"], note) for m, note in zip(self.conversation, self._notes, strict=True)
        ]
        if pending is not None:
            turns += [("user", pending[0], None), ("assistant", pending[1] + " …", None)]
        self.transcript.value = view.chat(turns)


class ServerTab:
    """The local API served from the panel (as LM Studio's Developer tab does): port, key, URL, request log."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.server: Server | None = None
        self.port = w.BoundedIntText(8080, min=0, max=65535, description=t("port"), tooltip="0 picks a free port")
        self.key = w.Password(placeholder=t("API key (optional)"), layout=w.Layout(width="16em"))
        self.button = button(t("Start server"), "success", "Serve the API on 127.0.0.1", "lmbench-serve")
        self.button.on_click(lambda _: self.toggle())
        self.info = w.HTML(view.server_info(None, None))
        self.info.add_class("lmbench-server-info")
        self.log = w.HTML()
        self.log.add_class("lmbench-server-log")
        self._requests: collections.deque[str] = collections.deque(maxlen=200)
        self._handler = _RequestLog(self._on_request)
        self.box = w.VBox([row([self.port, self.key, self.button]), self.info, self.log])

    def toggle(self) -> None:
        """Start the API on 127.0.0.1 with the panel's model and store, or stop it."""
        t = self.host.t
        if self.server is not None:
            self.server.stop()
            logging.getLogger("lmbench.api").removeHandler(self._handler)
            self.server = None
            self.button.description, self.button.button_style = t("Start server"), "success"
            self.info.value = view.server_info(None, None)
            self.host.event("API server stopped")
            return
        settings = self.host.server_settings(self.key.value or None)
        try:
            server = Server(settings, port=self.port.value)
            url = server.start()
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.server = server
        api_log = logging.getLogger("lmbench.api")
        api_log.setLevel(logging.INFO)
        api_log.addHandler(self._handler)
        self.button.description, self.button.button_style = t("Stop server"), "danger"
        self.info.value = view.server_info(url, settings.api_key)
        self.host.event(f"API server on {url} (model {server.service.default_id})")

    def _on_request(self, line: str) -> None:
        self._requests.append(f"{datetime.now():%H:%M:%S} {line}")
        self.log.value = view.log(self._requests, [])


class _RequestLog(logging.Handler):
    """Hands the API server's request lines to the Server tab."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._show = show

    def emit(self, record: logging.LogRecord) -> None:
        self._show(record.getMessage())
