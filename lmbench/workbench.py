"""The workbench panel (``lmbench.panel()``): prompt, sliders, Generate/Stop, streaming, stats, tabs.

A thin layer of ipywidgets over ``generate``, ``compare``, presets and the run store. Work runs
in a worker thread so the kernel stays responsive and Stop can cancel between tokens; every
failure is shown inside the panel as the ``LmbenchError`` message.
"""

from __future__ import annotations

import collections
import html
import json
import math
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w
import pandas as pd

from . import _panel_html as view
from . import models
from ._i18n import language, translator
from ._keys import Shortcuts
from ._panel_tabs import ChatTab, CompareTab, HistoryTab, ServerTab, Throttled, button, row
from .api import Settings
from .chat import ask
from .engine import Engine, load_engine, physical_cores
from .errors import LmbenchError, ParameterError
from .params import MAX_SEED, PARAM_SPECS, ParamSpec, param_specs
from .presets import presets, resolve_preset, save_preset
from .run import Run
from .store import Store, get_store

# Top alternatives recorded per token for the debug view.
DEBUG_TOP = 5


def _slider(spec: ParamSpec, t: Callable[[str], str]) -> w.Widget:
    """A slider labelled as the guides name the parameter (its name, meaning and range in the tooltip);
    Max Tokens is a number box, whose range is too wide for a slider."""
    options: dict[str, Any] = {
        "value": spec.default, "min": spec.ui_min, "max": spec.ui_max, "description": t(spec.label),
        "description_allow_html": False, "tooltip": f"{spec.name}: {spec.description} ({spec.range_text()})",
        "style": {"description_width": "12.5em"}, "layout": w.Layout(width="28em"),
    }  # fmt: skip
    if spec.name == "max_tokens":
        slider = w.BoundedIntText(**options)
    elif spec.type is int:
        slider = w.IntSlider(step=spec.ui_step, continuous_update=False, **options)
    else:
        slider = w.FloatSlider(step=spec.ui_step, continuous_update=False, readout_format=".2f", **options)
    slider.add_class(f"lmbench-param-{spec.name}")
    return slider


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
        self._restoring = False

        # Model and load settings.
        self.model = w.Combobox(
            value=str(self.engine.path if self.engine else model or ""),
            options=self._model_choices(found := self._found_models()),
            placeholder=t("model: path, file name or alias (empty: $LMBENCH_MODEL or the default)"),
            ensure_option=False,
            layout=w.Layout(width="36em"),
        )
        self.model.add_class("lmbench-model")
        self.model_info = w.HTML(
            self._describe(self.engine.path if self.engine else model if isinstance(model, str) else None)
        )
        self.model_info.add_class("lmbench-model-info")
        self.n_ctx = w.BoundedIntText(
            self.engine.n_ctx if self.engine else 2048,
            min=16,
            max=1 << 20,
            description=t("context length"),
            style={"description_width": "initial"},
            layout=w.Layout(width="16em"),
        )
        self.n_threads = w.BoundedIntText(
            self.engine.n_threads if self.engine else physical_cores(),
            min=1,
            max=512,
            description=t("threads"),
            style={"description_width": "initial"},
            layout=w.Layout(width="12em"),
        )
        self.parallel = w.BoundedIntText(
            self.engine.parallel if self.engine else 1,
            min=1,
            max=256,
            description=t("parallel"),
            tooltip="requests decoded together, each with the whole context (the KV cache grows with it)",
            style={"description_width": "initial"},
            layout=w.Layout(width="12em"),
        )
        self.kv_info = w.HTML()
        self.kv_info.add_class("lmbench-kv-info")
        self.models_table = w.HTML(view.models_table(_with_loaded(found, self.engine), self._loaded_path()))
        self.models_table.add_class("lmbench-models")
        self.load_button = button(t("Load"), "", "Load the model now (Generate also loads it)", "lmbench-load")
        self.load_button.on_click(lambda _: self.start(self._load_job))
        load_settings = w.Accordion(
            [w.VBox([row([self.n_ctx, self.n_threads, self.parallel]), self.kv_info, self.models_table])],
            titles=(t("Load settings"),),
        )
        load_settings.selected_index = None

        # Prompt and parameters, from the one parameter definition.
        self.prompt = w.Textarea(placeholder=t("Prompt"), rows=4, layout=w.Layout(width="100%"))
        self.prompt.add_class("lmbench-prompt")
        self.token_count = w.HTML()
        self.token_count.add_class("lmbench-token-count")
        self.prompt.observe(lambda _: self._count_tokens(), names="value")
        self.sliders: dict[str, w.Widget] = {s.name: _slider(s, t) for s in param_specs() if s.ui_min is not None}
        self.n_ctx.observe(self._on_n_ctx, names="value")
        self._on_n_ctx({"new": self.n_ctx.value})
        self.seed = w.BoundedIntText(0, min=0, max=MAX_SEED, description=t("Seed"), disabled=True)
        self.random_seed = w.Checkbox(True, description=t("random seed"), indent=False)
        self.random_seed.observe(lambda change: setattr(self.seed, "disabled", change["new"]), names="value")
        self.stop = w.TagsInput(value=[], allow_duplicates=False, tooltip="Stop strings")
        self.json_schema = w.Textarea(
            placeholder='JSON schema, e.g. {"type": "object", "properties": {"answer": {"type": "string"}}}',
            rows=3, layout=w.Layout(width="100%"), tooltip=PARAM_SPECS["json_schema"].description,
        )  # fmt: skip
        self.json_schema.add_class("lmbench-json-schema")
        self.debug_tokens = w.Checkbox(True, description=t("record token probabilities"), indent=False)
        self.raw = w.Checkbox(
            False,
            description=t("raw completion"),
            indent=False,
            tooltip="Complete the prompt as it is; off: an instruct model gets it as a user message through its "
            "chat template",
        )
        self.toggles = {
            s.name: w.Checkbox(s.default, description=t(s.label), tooltip=f"{s.name}: {s.description}", indent=False)
            for s in param_specs()
            if s.type is bool
        }
        self.experiment = w.Text(experiment or "", placeholder=t("experiment (optional)"), description=t("experiment"))

        # Presets.
        self.preset = w.Dropdown(options=[], description=t("preset"))
        self.preset.observe(self._on_preset, names="value")
        self.preset_values = w.HTML()
        self.preset_name = w.Text(placeholder=t("name"), layout=w.Layout(width="10em"))
        self.save_preset_button = button(t("Save preset"), "", "Save the current sampler values", "lmbench-save-preset")
        self.save_preset_button.on_click(lambda _: self._save_preset())
        self._refresh_presets()

        # Actions and output.
        self.generate_button = button(t("Generate"), "primary", "Generate from the prompt", "lmbench-generate")
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

        # Tabs.
        self.log = w.HTML()
        self.log.add_class("lmbench-log")
        self.log_debug = w.Checkbox(False, description=t("show llama.cpp debug lines"), indent=False)
        self.log_debug.observe(lambda _: self._refresh_log(), names="value")
        self.debug = w.HTML()
        self.debug.add_class("lmbench-debug")
        self.debug_token = w.Dropdown(options=[], description=t("token"))
        self.debug_token.observe(lambda _: self._show_alternatives(), names="value")
        self.alternatives = w.HTML()
        numeric = [name for name in self.sliders if name != "max_tokens"]
        self.history = HistoryTab(self)
        self.compare = CompareTab(self, numeric, lambda name: type(self.sliders[name].value))
        self.chat = ChatTab(self)
        self.server = ServerTab(self)

        output_tab = w.VBox([self.output, self.stats])
        tabs = w.Tab(
            [
                output_tab,
                self.history.box,
                w.VBox([self.log_debug, self.log]),
                w.VBox([self.debug, self.debug_token, self.alternatives]),
                self.compare.box,
                self.chat.box,
                self.server.box,
            ],
            titles=tuple(map(t, ("Output", "History", "Log", "Debug", "Compare", "Chat", "Server"))),
        )
        self.tabs = tabs
        params = w.GridBox(
            [*self.sliders.values()],
            layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(28em, 1fr))"),
        )
        self.widget = w.VBox(
            [
                row([self.model, self.load_button]),
                self.model_info,
                load_settings,
                self.prompt,
                row([self.generate_button, self.stop_button, self.token_count, self.status_line]),
                self.error,
                params,
                row([self.seed, self.random_seed, self.debug_tokens, self.raw, *self.toggles.values()]),
                row([w.Label(t("Stop Strings")), self.stop]),
                _folded(self.json_schema, t("Structured output (JSON schema)")),
                row([self.preset, self.preset_name, self.save_preset_button]),
                self.preset_values,
                self.experiment,
                tabs,
            ],
            layout=w.Layout(border="1px solid var(--jp-border-color2, #ddd)", padding="8px", width="100%"),
        )
        self.widget.children = (*self.widget.children, Shortcuts())
        self.widget.add_class("lmbench-panel")
        self.history.refresh()
        self._refresh_log()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # Parameters --------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """The generation parameters the controls describe now."""
        values: dict[str, Any] = {name: slider.value for name, slider in self.sliders.items()}
        values.update({name: toggle.value for name, toggle in self.toggles.items()})
        values["seed"] = None if self.random_seed.value else self.seed.value
        values["stop"] = list(self.stop.value)
        values["logprobs"] = DEBUG_TOP if self.debug_tokens.value else None
        schema = self.json_schema.value.strip()
        if schema:
            try:
                values["json_schema"] = json.loads(schema)
            except ValueError as exc:
                raise ParameterError(f"the JSON schema box does not hold JSON: {exc}", name="json_schema") from None
        return values

    def set_values(self, values: dict[str, Any]) -> None:
        """Put parameter values into the controls (unknown names are ignored)."""
        for name, value in values.items():
            if name in self.sliders and value is not None and not (isinstance(value, float) and math.isnan(value)):
                slider = self.sliders[name]
                slider.max = max(slider.max, value)
                slider.min = min(slider.min, value)
                slider.value = value
        for name, toggle in self.toggles.items():
            if values.get(name) is not None:
                toggle.value = bool(values[name])
        if "seed" in values and values["seed"] is not None:
            self.random_seed.value = False
            self.seed.value = int(values["seed"])
        if "stop" in values:
            self.stop.value = list(values["stop"] or [])
        if "json_schema" in values:
            self.json_schema.value = json.dumps(values["json_schema"]) if values["json_schema"] else ""

    def _on_n_ctx(self, change: dict[str, Any]) -> None:
        slider = self.sliders["max_tokens"]
        slider.max = max(int(change["new"]), slider.min)

    def _refresh_presets(self, select: str | None = None) -> None:
        self._restoring = True
        try:
            self.preset.options = [("—", None), *((name, name) for name in presets())]
            self.preset.value = select
        finally:
            self._restoring = False

    def _on_preset(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if name is None:
            self.preset_values.value = ""
            return
        values = resolve_preset(name)
        self.preset_values.value = view.preset(name, values)
        if not self._restoring:
            self.set_values(values)

    def _save_preset(self) -> None:
        try:
            name = self.preset_name.value.strip()
            sampler = {k: v for k, v in self.values().items() if k in self.sliders and k != "max_tokens"}
            save_preset(name, **sampler)
        except LmbenchError as exc:
            self.show_error(exc)
            return
        self.event(f"saved preset {name!r}")
        self._refresh_presets(select=name)

    # The worker ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a generation (or load, or comparison) is running."""
        return self._worker is not None and self._worker.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running job, if any, has finished."""
        if self._worker is not None:
            self._worker.join(timeout)

    def start(self, job: Callable[[], None]) -> None:
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
            self.load_button,
            self.chat.send_button,
            self.chat.regenerate_button,
        )

    def _run_job(self, job: Callable[[], None]) -> None:
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

    def show_error(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, LmbenchError) else f"{type(exc).__name__}: {exc}"
        self.error.value = view.error(message)
        self.event(f"error: {message}")

    def event(self, message: str) -> None:
        self.events.append(f"{datetime.now():%H:%M:%S} {message}")
        self._refresh_log()

    # Jobs ----------------------------------------------------------------------------------

    def load(self) -> Engine:
        model = self.model.value.strip() or None
        self.status_line.value = f"<i>{self.t('loading…')}</i>"
        engine, loaded_now = load_engine(model, n_ctx=self.n_ctx.value, n_threads=self.n_threads.value)
        if loaded_now or engine is not self.engine:
            self.event(f"loaded {engine.name} (n_ctx={engine.n_ctx}, threads={engine.n_threads})")
            self.model_info.value = self._describe(engine.path)
            self.models_table.value = view.models_table(_with_loaded(self._found_models(), engine), str(engine.path))
        engine.parallel = self.parallel.value
        self.engine = engine
        self._count_tokens()
        self._show_kv_cache()
        return engine

    def _show_kv_cache(self) -> None:
        """The loaded model's KV cache: slots, cells each, memory (made at the first generation)."""
        if self.engine is None or self.engine.closed:
            self.kv_info.value = ""
            return
        status = self.engine.scheduler.status()
        if not status["slots"]:
            planned = f"{self.engine.parallel} x {self.engine.n_ctx} cells"
            self.kv_info.value = f"<small>KV cache: {planned}, made at the first generation</small>"
            return
        self.kv_info.value = (
            f"<small>KV cache: {status['slots']} slot(s) x {status['cells_per_slot']} cells, "
            f"{status['kv_cache_bytes'] / 2**20:.1f} MiB</small>"
        )

    def _load_job(self) -> None:
        self.load()

    def recorded(self, fn: Callable[..., Run], first: Any, engine: Engine, **options: Any) -> Run:
        """``generate`` or ``chat`` the panel's way: its store, its Stop button, its experiment."""
        experiment = self.experiment.value.strip() or None
        return fn(first, model=engine, cancel=self.cancel, store=self.store, source="panel", experiment=experiment,
                  **options)  # fmt: skip

    def _generate_job(self) -> None:
        params = self.values()
        prompt = self.prompt.value
        if not prompt.strip():
            raise ParameterError("type a prompt first: the prompt box is empty", name="prompt")
        engine = self.load()
        self.status_line.value = f"<i>{self.t('generating…')}</i>"
        self.stats.value = ""
        self.tabs.selected_index = 0
        stream = Throttled(lambda text: self._render_output(prompt, text))
        try:
            run = self.recorded(ask, prompt, engine, on_token=stream, raw=self.raw.value, **params)
        finally:
            self._render_output(prompt, stream.text)
        self.made(run)
        self.show_run(run)

    # Showing results ----------------------------------------------------------------------------

    def _render_output(self, prompt: str, text: str) -> None:
        self.output.value = view.output(prompt, text)

    def restore(self, run: Run) -> None:
        """Put a recorded run back in the panel: its prompt, settings and model, its output and stats."""
        self.prompt.value = run.prompt
        self.model.value = run.model_path  # loaded again by the next Generate
        self.set_values(run.params.model_dump())
        self.debug_tokens.value = run.params.logprobs is not None
        self.last_run = run
        self._render_output(run.prompt, run.text)
        self.show_run(run)

    def server_settings(self, api_key: str | None) -> Settings:
        """The API server's settings from the panel's model, context, slots and store."""
        return Settings(model=self.model.value.strip() or None, n_ctx=self.n_ctx.value, api_key=api_key,
                        store=self.store.path, parallel=self.parallel.value)  # fmt: skip

    def status(self, text: str) -> None:
        self.status_line.value = f"<i>{html.escape(text)}</i>"

    def prompt_text(self) -> str:
        return str(self.prompt.value)

    def experiment_name(self) -> str | None:
        return str(self.experiment.value).strip() or None

    def close(self) -> None:
        """Stop the panel's API server, if it runs (the panel itself stays usable)."""
        if self.server.server is not None:
            self.server.toggle()

    def made(self, run: Run) -> None:
        """A run this panel made: kept for its history, and a line in its log."""
        self._mine.add(run.id)
        self.event(view.log_line(run))

    def show_run(self, run: Run) -> None:
        self.last_run = run
        if self.random_seed.value:  # show the seed drawn, so it can be kept by unticking "random"
            self.seed.value = run.seed
        self.stats.value = view.stats(run)
        self._show_kv_cache()
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

    @staticmethod
    def _describe(model: str | os.PathLike[str] | None) -> str:
        """Which model the panel uses (and, for the default, why), as one line of HTML."""
        try:
            return f"<small>model: {html.escape(models.describe(model))}</small>"
        except LmbenchError as exc:
            return f"<small>model: {html.escape(str(exc))}</small>"

    def _loaded_path(self) -> str | None:
        return str(self.engine.path) if self.engine is not None and not self.engine.closed else None

    @staticmethod
    def _found_models() -> Any:
        """The models the model manager lists (None when the folders cannot be read)."""
        try:
            return models.list()
        except (LmbenchError, OSError):
            return None

    def _model_choices(self, found: Any) -> list[str]:
        aliases = [] if found is None else found.alias.dropna()
        return sorted({*aliases, *(e.path.as_posix() for e in [self.engine] if e is not None)})


def _with_loaded(found: Any, engine: Engine | None) -> Any:
    """The models found, plus the loaded one when it came from a path outside the model folders."""
    if engine is None or (found is not None and str(engine.path) in set(found.path.astype(str))):
        return found
    facts = engine.info
    row = {"alias": models.model_id(engine.path), "path": str(engine.path), "size": engine.size,
           "parameters": facts.get("parameters"), "quantization": facts.get("quantization"),
           "context_length": facts.get("context_length"), "has_chat_template": facts.get("has_chat_template"),
           "source": "path"}  # fmt: skip
    return pd.DataFrame([row]) if found is None else pd.concat([found, pd.DataFrame([row])], ignore_index=True)


def _folded(widget: w.Widget, title: str) -> w.Accordion:
    box = w.Accordion([widget], titles=(title,))
    box.selected_index = None
    return box


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
