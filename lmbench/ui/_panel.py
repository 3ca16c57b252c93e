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

from .._prompting import Turn, prepare, template_stops
from ..engine._engine import Engine, load_engine
from ..errors import LmbenchError, ParameterError
from ..generation import generate
from ..reproduce import audit, diff, fork
from ..run import Run
from ..serve._settings import Settings
from ..store._store import Store, get_store
from . import _html as view
from ._chat import ChatTab
from ._compare import CompareTab
from ._form import ParamsForm
from ._history import HistoryTab
from ._labels import language, translator
from ._parts import Throttled, button, row
from ._picker import ModelPicker
from ._server_tab import ServerTab
from ._shortcuts import Shortcuts

# The audit conditions the Debug tab's "Reproducible?" checks: those that need no second copy of the model.
PANEL_AUDIT = ("alone", "prompt cached", "batch 2", "batch 8", "no prefix cache", "after another prompt")


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
        self.form.raw.observe(lambda _: self._count_tokens(), names="value")

        self.prompt = w.Textarea(placeholder=t("Prompt"), rows=4, layout=w.Layout(width="100%"))
        self.prompt.add_class("lmbench-prompt")
        self.token_count = w.HTML()
        self.token_count.add_class("lmbench-token-count")
        self.prompt.observe(lambda _: self._count_tokens(), names="value")
        self.system = w.Text(placeholder=t("system prompt (optional)"), layout=w.Layout(width="100%"))
        self.system.add_class("lmbench-system")
        self.system.observe(lambda _: self._count_tokens(), names="value")
        self.experiment = w.Text(
            experiment or "",
            placeholder=t("experiment (optional)"),
            description=t("experiment"),
            style={"description_width": "initial"},
        )
        self.generate_button = button(
            t("Generate"), "primary", t("Generate from the prompt (Ctrl+Enter)"), "lmbench-generate"
        )
        self.generate_button.on_click(lambda _: self.start(self._generate_job))
        self.stop_button = button(t("Stop"), "", t("Stop the generation"), "lmbench-stop")
        self.stop_button.disabled = True
        self.stop_button.on_click(lambda _: self.cancel.set())
        self.status_line = w.HTML()
        self.error = w.HTML()
        self.error.add_class("lmbench-error")
        self.output = w.HTML(layout=w.Layout(width="100%"))
        self.output.add_class("lmbench-output")
        self.stats = w.HTML()
        self.stats.add_class("lmbench-stats")

        self.log = w.HTML()
        self.log.add_class("lmbench-log")
        self.log_debug = w.Checkbox(
            False, description=t("show llama.cpp debug lines"), indent=False, layout=w.Layout(width="auto")
        )
        self.log_debug.observe(lambda _: self._refresh_log(), names="value")
        self.debug = w.HTML()
        self.debug.add_class("lmbench-debug")
        self.debug_token = w.Dropdown(options=[], description=t("token"), style={"description_width": "initial"})
        self.debug_token.observe(lambda _: self._show_alternatives(), names="value")
        self.alternatives = w.HTML()
        self.fork_choice = w.Dropdown(options=[], description=t("alternative"), style={"description_width": "initial"})
        self.fork_button = button(
            t("Fork"), "", t("Continue the generation from the chosen alternative"), "lmbench-fork"
        )
        self.fork_button.on_click(lambda _: self.start(self._fork_job))
        self.audit_button = button(
            t("Reproducible?"),
            "",
            t("Generate the last run again alone, in batches, with and without the cache"),
            "lmbench-audit",
        )
        self.audit_button.on_click(lambda _: self.start(self._audit_job))
        self.audit = w.HTML()
        self.audit.add_class("lmbench-audit")
        self.history = HistoryTab(self)
        numeric = [name for name in self.form.sliders if name != "max_tokens"]
        self.compare = CompareTab(self, numeric, lambda name: type(self.form.sliders[name].value))
        self.chat = ChatTab(self)
        self.history.on_conversation = self._open_conversation
        self.server = ServerTab(self)
        self.tabs = w.Tab(
            [
                w.VBox([self.output, self.stats]),
                self.history.box,
                w.VBox([self.log_debug, self.log]),
                w.VBox(
                    [
                        self.debug,
                        self.debug_token,
                        self.alternatives,
                        row([self.fork_choice, self.fork_button, self.audit_button]),
                        self.audit,
                    ]
                ),
                self.compare.box,
                self.chat.box,
                self.server.box,
            ],
            titles=tuple(map(t, ("Output", "History", "Log", "Debug", "Compare", "Chat", "Server"))),
        )
        for action in (self.generate_button, self.stop_button, self.fork_button, self.audit_button):
            action.layout.width, action.layout.min_width = "auto", "8em"  # the longer Spanish words fit
        self.widget = w.VBox(
            [
                w.HTML(view.PANEL_STYLE, layout=w.Layout(display="none")),
                self.picker.box,
                self.system,
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
        self._enable_stop(False)
        self.history.refresh()
        self._refresh_log()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        """The panel, and under it a note that shows only where the panel cannot: in a notebook opened
        again after its kernel stopped, where JupyterLab would otherwise say only "Error displaying
        widget: model not found"."""
        from IPython.display import display

        show: Callable[..., object] = display  # IPython's display is untyped
        show(self.widget)
        show({"text/html": view.restart_note(self.t)}, raw=True)

    # What the parts share (the ``Host`` interface) -----------------------------------------------

    def values(self) -> dict[str, Any]:
        """The generation parameters the controls describe now."""
        return self.form.values()

    def prompt_text(self) -> str:
        return str(self.prompt.value)

    def turn(self, engine: Engine) -> Turn:
        """The prompt box as Generate sends it: the rule of ``lmbench._prompting`` with the raw box and the
        system prompt (Generate, Compare and the token counter all ask here)."""
        return prepare(engine, self.prompt_text(), raw=self.form.raw.value, system=self.system.value.strip() or None)

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
        self.event(view.log_line(run, self.t))

    def restore(self, run: Run) -> None:
        """Put a recorded run back in the panel as it was asked (its prompt and system prompt as typed,
        raw or through the template, its settings and model) with its output and stats: Generate
        then sends the same text again."""
        self.prompt.value = run.prompt
        self.system.value = next((m["content"] for m in run.messages or [] if m["role"] == "system"), "")
        self.form.raw.value = run.chat_format is None
        self.picker.choose(run.model_path)  # loaded again by the next Generate
        self.form.set_values(run.params.model_dump())
        self.show_run(run)

    def _open_conversation(self, name: str) -> None:
        """A saved conversation chosen in History, reopened in the Chat tab."""
        self.chat.open(name)
        self.tabs.selected_index = list(self.tabs.children).index(self.chat.box)

    def show_error(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, LmbenchError) else f"{type(exc).__name__}: {exc}"
        self.error.value = view.error(message, view.error_heading(exc, self.t))
        self.event(f"{self.t('error')}: {message}")

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
        self._enable_stop(True)
        self._worker = threading.Thread(target=self._run_job, args=(job,), name="lmbench-panel", daemon=True)
        self._worker.start()

    def _stop_buttons(self) -> tuple[w.Button, ...]:
        """Stop under the prompt and beside the chat's message box: enabled while work runs."""
        return (self.stop_button, self.chat.stop_button)

    def _enable_stop(self, enabled: bool) -> None:
        """Stop is red only while there is something to stop; disabled it is a plain grey button."""
        for stop in self._stop_buttons():
            stop.disabled = not enabled
            stop.button_style = "danger" if enabled else ""

    def _action_buttons(self) -> tuple[w.Button, ...]:
        return (
            self.generate_button,
            self.compare.button,
            self.picker.load_button,
            self.chat.send_button,
            self.chat.regenerate_button,
            self.chat.results_button,
            self.chat.save_button,
            self.chat.open_button,
            self.fork_button,
            self.audit_button,
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
            self._enable_stop(False)
            self.history.refresh()
            self._refresh_log()

    # Jobs ----------------------------------------------------------------------------------

    def load(self) -> Engine:
        """The picker's model, loaded with its settings (a model already loaded is reused)."""
        self.status(self.t("loading…"))
        engine = load_engine(
            self.picker.name, n_ctx=self.picker.n_ctx.value, n_threads=self.picker.n_threads.value or None
        )
        first_time = engine is not self.engine  # a model loaded (again) is a new engine
        if first_time:
            loaded = self.t("loaded {name} (n_ctx={n_ctx}, threads {threads})")
            self.event(loaded.format(name=engine.name, n_ctx=engine.n_ctx, threads=engine.threads.describe()))
        self.picker.loaded(engine, first_time)
        self.engine = engine
        self._count_tokens()
        return engine

    def _generate_job(self) -> None:
        params = self.values()
        prompt = self.prompt.value
        if not prompt.strip():
            raise ParameterError(self.t("type a prompt first: the prompt box is empty"), name="prompt")
        engine = self.load()
        self.status(self.t("generating…"))
        self.stats.value = ""
        self.tabs.selected_index = 0
        stream: Throttled = Throttled(lambda text: self._render_output(prompt, text, self._live(stream)))
        try:
            run = self.recorded(
                generate,
                prompt,
                engine,
                on_token=stream,
                raw=self.form.raw.value,
                system=self.system.value.strip() or None,
                **params,
            )
        finally:
            self._render_output(prompt, stream.text)
        self.made(run)
        self.show_run(run)

    def _fork_job(self) -> None:
        """Continue the shown run from the chosen alternative at the chosen token; show where the two part
        (in Debug and in Compare)."""
        parent, at, token = self.last_run, self.debug_token.value, self.fork_choice.value
        if parent is None or at is None or token is None:
            raise ParameterError(self.t("generate first, then pick a token and one of its alternatives"), name="token")
        engine = self.load()
        self.status(self.t("generating…"))
        child = fork(parent, at, token, model=engine, store=self.store)
        self.made(child)
        self._render_output(child.prompt, child.text)
        self.show_run(child)
        self.audit.value = self.compare.output.value = diff(parent, child, store=self.store)._repr_html_()

    def _audit_job(self) -> None:
        """The determinism audit of the shown run's request, in the conditions that need no second model."""
        run = self.last_run
        if run is None:
            raise ParameterError(self.t("generate first: the audit repeats the last run's request"), name="prompt")
        engine = self.load()
        self.status(self.t("checking…"))
        params = {k: v for k, v in run.params.model_dump().items() if k not in ("seed", "logprobs")}
        params["stop"] = [*run.stop, *(s for s in template_stops(engine, run.chat_format) if s not in run.stop)]
        report = audit(
            run.prompt_sent or run.prompt,  # the text the run sent, its template's stops with it
            model=engine,
            seed=run.seed,
            runs=1,
            conditions=PANEL_AUDIT,
            store=self.store,
            special=run.chat_format is not None,
            **params,
        )
        self.audit.value = view.audit(report, self.t)

    # Showing results ----------------------------------------------------------------------------

    def _render_output(self, prompt: str, text: str, live: str = "") -> None:
        self.output.value = view.output(prompt, text, t=self.t, live=live)

    def _live(self, stream: Throttled) -> str:
        """The counter under a streaming reply: tokens so far and the speed after the first."""
        rate = stream.rate
        speed = f"{rate:,.1f} tok/s" if rate is not None else "— tok/s"
        return f"{self.t('generating…')} {stream.count} {self.t('tokens')} · {speed}"

    def show_run(self, run: Run) -> None:
        """Show a run: its prompt as asked and its reply in the Output tab, its stats under them (the stats
        always belong to the run shown), its tokens in Debug."""
        self.last_run = run
        self._render_output(run.prompt, run.text)
        if self.form.random_seed.value:  # show the seed drawn, so it can be kept by unticking "random"
            self.form.seed.value = run.seed
        self.stats.value = view.stats(run, self.t)
        self.picker.show_kv_cache(self.engine)
        entries = run.token_logprobs or []
        self.debug.value = view.tokens(entries, self.t)
        self.debug_token.options = [
            (f"#{i} {entry['token']!r} p={math.exp(entry['logprob']):.3f}", i) for i, entry in enumerate(entries)
        ]
        self.debug_token.value = 0 if entries else None
        self._show_alternatives()

    def _show_alternatives(self) -> None:
        run, index = self.last_run, self.debug_token.value
        entries = run.token_logprobs if run is not None else None
        entry = entries[index] if entries and index is not None else None
        self.alternatives.value = (
            view.alternatives(entry, index, self.t) if entry is not None and index is not None else ""
        )
        options = [
            (f"{alt['token']!r} p={math.exp(alt['logprob']):.3f}", alt["id"])
            for alt in (entry or {}).get("top", [])
            if entry is not None and alt["id"] != entry["id"]
        ]
        self.fork_choice.options = options
        self.fork_choice.value = options[0][1] if options else None

    def _refresh_log(self) -> None:
        engine_lines = [*self.engine.logs] if self.engine is not None else []
        if not self.log_debug.value:
            engine_lines = [line for line in engine_lines if not line.startswith("[DEBUG]")]
        self.log.value = view.log(self.events, engine_lines[-300:], self.t)

    def _count_tokens(self) -> None:
        """The length of what Generate will send (the prompt through the template when it applies), in the
        loaded model's tokens, against its context: the number the stats line then says."""
        engine = self.engine
        if engine is None or engine.closed or not self.prompt.value:
            self.token_count.value = ""
            return
        try:
            turn = self.turn(engine)
        except LmbenchError as exc:
            self.token_count.value = f"<small>{html.escape(str(exc))}</small>"
            return
        n = len(engine.tokenize(turn.sent, **turn.tokenize_options))
        line = self.t("{n} tokens of {n_ctx}").format(n=n, n_ctx=engine.n_ctx) + f" · {self.t(turn.mode)}"
        self.token_count.value = f"<small>{html.escape(line)}</small>"


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
