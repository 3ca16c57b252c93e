"""The workbench panel (``lmbench.panel()``): prompt, sliders, Generate/Stop, streaming, stats, tabs.

A thin layer of ipywidgets over ``generate``, ``compare``, presets and the run store, composed of
parts that each own their widgets and one job (``lmbench._panel_parts``): the model picker, the
parameters form, and the History, Compare, Chat and Server tabs. The panel itself keeps the
prompt, the output, the Log and Debug views, and the worker: work runs in a thread so the kernel
stays responsive and Stop can cancel between tokens; every failure is shown inside the panel as
the ``LmbenchError`` message.
"""

from __future__ import annotations

import collections
import html
import math
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w

from ..chat import ask
from ..engine._engine import Engine, load_engine
from ..errors import LmbenchError, ParameterError
from ..run import Run
from ..serve._settings import Settings
from ..store._store import Store, get_store
from . import _html as view
from ._labels import language, translator
from ._parts import (
    ChatTab,
    CompareTab,
    HistoryTab,
    ModelPicker,
    ParamsForm,
    ServerTab,
    Throttled,
    button,
    row,
)
from ._shortcuts import Shortcuts


class Panel:
    """The workbench panel; display it in a notebook (``lmbench.panel()`` or ``%lmbench panel``)."""

    def __init__(
        self,
        model: str | Engine | None = None,
        *,
        store: str | Store | None = None,
        experiment: str | None = None,
        lang: str | None = None,
    ) -> None:
        self.lang = language(lang)
        self.t = t = translator(self.lang)
        self.store = get_store(store)
        self.engine: Engine | None = model if isinstance(model, Engine) else None
        self.last_run: Run | None = None
        self.events: collections.deque[str] = collections.deque(maxlen=500)
        self._mine: set[str] = set()  # runs made from this panel (the history shows these unless asked for all)
        self.cancel = threading.Event()
        self._worker: threading.Thread | None = None

        self.picker = ModelPicker(self, model)
        self.picker.load_button.on_click(lambda _: self.start(self.load))
        self.form = ParamsForm(self)
        self.picker.n_ctx.observe(lambda change: self.form.follow_context(change["new"]), names="value")
        self.form.follow_context(self.picker.n_ctx.value)

        self.prompt = w.Textarea(placeholder=t("Prompt"), rows=4, layout=w.Layout(width="100%"))
        self.prompt.add_class("lmbench-prompt")
        self.token_count = w.HTML()
        self.token_count.add_class("lmbench-token-count")
        self.prompt.observe(lambda _: self._count_tokens(), names="value")
        self.experiment = w.Text(experiment or "", placeholder=t("experiment (optional)"), description=t("experiment"))
        self.generate_button = button(
            t("Generate"), "primary", "Generate from the prompt (Ctrl+Enter)", "lmbench-generate"
        )
        self.generate_button.on_click(lambda _: self.start(self._generate_job))
        self.stop_button = button(t("Stop"), "danger", "Stop the generation", "lmbench-stop")
        self.stop_button.disabled = True
        self.stop_button.on_click(lambda _: self.cancel.set())
        self.status_line = w.HTML()
        self.error = w.HTML()
        self.error.add_class("lmbench-error")
        self.output = w.HTML(layout=w.Layout(width="100%", max_height="24em", overflow="auto"))
        self.output.add_class("lmbench-output")
        self.stats = w.HTML()
        self.stats.add_class("lmbench-stats")

        self.log = w.HTML()
        self.log.add_class("lmbench-log")
        self.log_debug = w.Checkbox(False, description=t("show llama.cpp debug lines"), indent=False)
        self.log_debug.observe(lambda _: self._refresh_log(), names="value")
        self.debug = w.HTML()
        self.debug.add_class("lmbench-debug")
        self.debug_token = w.Dropdown(options=[], description=t("token"))
        self.debug_token.observe(lambda _: self._show_alternatives(), names="value")
        self.alternatives = w.HTML()
        self.history = HistoryTab(self)
        numeric = [name for name in self.form.sliders if name != "max_tokens"]
        self.compare = CompareTab(self, numeric, lambda name: type(self.form.sliders[name].value))
        self.chat = ChatTab(self)
        self.server = ServerTab(self)
        self.tabs = w.Tab(
            [
                w.VBox([self.output, self.stats]),
                self.history.box,
                w.VBox([self.log_debug, self.log]),
                w.VBox([self.debug, self.debug_token, self.alternatives]),
                self.compare.box,
                self.chat.box,
                self.server.box,
            ],
            titles=tuple(map(t, ("Output", "History", "Log", "Debug", "Compare", "Chat", "Server"))),
        )
        self.widget = w.VBox(
            [
                self.picker.box,
                self.prompt,
                row([self.generate_button, self.stop_button, self.token_count, self.status_line]),
                self.error,
                self.form.box,
                self.experiment,
                self.tabs,
                Shortcuts(),
            ],
            layout=w.Layout(border="1px solid var(--jp-border-color2, #ddd)", padding="8px", width="100%"),
        )
        self.widget.add_class("lmbench-panel")
        self.history.refresh()
        self._refresh_log()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # What the parts share (the ``Host`` interface) -----------------------------------------------

    def values(self) -> dict[str, Any]:
        """The generation parameters the controls describe now."""
        return self.form.values()

    def prompt_text(self) -> str:
        return str(self.prompt.value)

    def experiment_name(self) -> str | None:
        return str(self.experiment.value).strip() or None

    def status(self, text: str) -> None:
        self.status_line.value = f"<i>{html.escape(text)}</i>"

    def server_settings(self, api_key: str | None) -> Settings:
        """The API server's settings from the panel's model, context, slots and store."""
        return Settings(
            model=self.picker.name,
            n_ctx=self.picker.n_ctx.value,
            api_key=api_key,
            store=self.store.path,
            parallel=self.picker.parallel.value,
        )

    def recorded(self, fn: Callable[..., Run], first: Any, engine: Engine, **options: Any) -> Run:
        """``generate`` or ``chat`` the panel's way: its store, its Stop button, its experiment."""
        return fn(
            first,
            model=engine,
            cancel=self.cancel,
            store=self.store,
            source="panel",
            experiment=self.experiment_name(),
            **options,
        )

    def made(self, run: Run) -> None:
        """A run this panel made: kept for its history, and a line in its log."""
        self._mine.add(run.id)
        self.event(view.log_line(run))

    def restore(self, run: Run) -> None:
        """Put a recorded run back in the panel: its prompt, settings and model, its output and stats."""
        self.prompt.value = run.prompt
        self.picker.model.value = run.model_path  # loaded again by the next Generate
        self.form.set_values(run.params.model_dump())
        self.last_run = run
        self._render_output(run.prompt, run.text)
        self.show_run(run)

    def show_error(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, LmbenchError) else f"{type(exc).__name__}: {exc}"
        self.error.value = view.error(message)
        self.event(f"error: {message}")

    def event(self, message: str) -> None:
        self.events.append(f"{datetime.now():%H:%M:%S} {message}")
        self._refresh_log()

    def close(self) -> None:
        """Stop the panel's API server, if it runs (the panel itself stays usable)."""
        if self.server.server is not None:
            self.server.toggle()

    # The worker ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a generation (or load, or comparison) is running."""
        return self._worker is not None and self._worker.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running job, if any, has finished."""
        if self._worker is not None:
            self._worker.join(timeout)

    def start(self, job: Callable[[], Any]) -> None:
        """Run ``job`` in the worker thread (one at a time), with Stop enabled and the other actions not."""
        if self.busy:
            return
        self.cancel.clear()
        self.error.value = ""
        for action in self._action_buttons():
            action.disabled = True
        self.stop_button.disabled = False
        self._worker = threading.Thread(target=self._run_job, args=(job,), name="lmbench-panel", daemon=True)
        self._worker.start()

    def _action_buttons(self) -> tuple[w.Button, ...]:
        return (
            self.generate_button,
            self.compare.button,
            self.picker.load_button,
            self.chat.send_button,
            self.chat.regenerate_button,
        )

    def _run_job(self, job: Callable[[], Any]) -> None:
        try:
            job()
        except LmbenchError as exc:
            self.show_error(exc)
        except Exception as exc:  # noqa: BLE001 - the panel must stay usable whatever happens
            self.show_error(exc)
        finally:
            self.status_line.value = ""
            for action in self._action_buttons():
                action.disabled = False
            self.stop_button.disabled = True
            self.history.refresh()
            self._refresh_log()

    # Jobs ----------------------------------------------------------------------------------

    def load(self) -> Engine:
        """The picker's model, loaded with its settings (a model already loaded is reused)."""
        self.status(self.t("loading…"))
        engine, loaded_now = load_engine(
            self.picker.name, n_ctx=self.picker.n_ctx.value, n_threads=self.picker.n_threads.value or None
        )
        first_time = loaded_now or engine is not self.engine
        if first_time:
            self.event(f"loaded {engine.name} (n_ctx={engine.n_ctx}, threads {engine.threads.describe()})")
        self.picker.loaded(engine, first_time)
        self.engine = engine
        self._count_tokens()
        return engine

    def _generate_job(self) -> None:
        params = self.values()
        prompt = self.prompt.value
        if not prompt.strip():
            raise ParameterError("type a prompt first: the prompt box is empty", name="prompt")
        engine = self.load()
        self.status(self.t("generating…"))
        self.stats.value = ""
        self.tabs.selected_index = 0
        stream = Throttled(lambda text: self._render_output(prompt, text))
        try:
            run = self.recorded(ask, prompt, engine, on_token=stream, raw=self.form.raw.value, **params)
        finally:
            self._render_output(prompt, stream.text)
        self.made(run)
        self.show_run(run)

    # Showing results ----------------------------------------------------------------------------

    def _render_output(self, prompt: str, text: str) -> None:
        self.output.value = view.output(prompt, text)

    def show_run(self, run: Run) -> None:
        self.last_run = run
        if self.form.random_seed.value:  # show the seed drawn, so it can be kept by unticking "random"
            self.form.seed.value = run.seed
        self.stats.value = view.stats(run)
        self.picker.show_kv_cache(self.engine)
        entries = run.token_logprobs or []
        self.debug.value = view.tokens(entries)
        self.debug_token.options = [
            (f"#{i} {entry['token']!r} p={math.exp(entry['logprob']):.3f}", i) for i, entry in enumerate(entries)
        ]
        self.debug_token.value = 0 if entries else None
        self._show_alternatives()

    def _show_alternatives(self) -> None:
        run, index = self.last_run, self.debug_token.value
        entries = run.token_logprobs if run is not None else None
        self.alternatives.value = view.alternatives(entries[index], index) if entries and index is not None else ""

    def _refresh_log(self) -> None:
        engine_lines = [*self.engine.logs] if self.engine is not None else []
        if not self.log_debug.value:
            engine_lines = [line for line in engine_lines if not line.startswith("[DEBUG]")]
        self.log.value = view.log(self.events, engine_lines[-300:])

    def _count_tokens(self) -> None:
        """The prompt's length in the loaded model's tokens, against its context (as LM Studio shows it)."""
        engine = self.engine
        if engine is None or engine.closed or not self.prompt.value:
            self.token_count.value = ""
            return
        n = len(engine.tokenize(self.prompt.value))
        self.token_count.value = f"<small>{n} tokens of {engine.n_ctx}</small>"


def panel(
    model: str | Engine | None = None,
    *,
    store: str | Store | None = None,
    experiment: str | None = None,
    lang: str | None = None,
) -> Panel:
    """The workbench panel for a model (default: ``$LMBENCH_MODEL`` or the default model).

    ``lang``: ``"en"`` or ``"es"`` (default: ``$LMBENCH_LANG``, else JupyterLab's language, else English).
    """
    return Panel(model, store=store, experiment=experiment, lang=lang)
