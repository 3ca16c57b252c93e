"""The panel's parts: the model picker, the parameters form with presets, and the History,
Compare, Chat and Server tabs.

Each owns its widgets (``box`` is what the panel shows) and its one job; the panel composes them
and lends what they share through the small ``Host`` interface: its store and language, its
worker (start, cancel, load the model), the generation values, and where runs are shown.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import ipywidgets as w
import pandas as pd

from .. import models
from .._prompting import Turn
from ..chat import chat
from ..compare import compare
from ..engine._engine import Engine
from ..errors import LmbenchError, ParameterError
from ..generation import Job, Recorder, execute_many, random_seed
from ..params import MAX_SEED, MAX_TOKENS, PARAM_SPECS, ParamSpec, param_specs, validate_params
from ..presets import presets, resolve_preset, save_preset
from ..run import Labels, Run
from ..serve._server import Server
from ..serve._settings import Settings
from ..store._store import Store
from ..variants_lab import drift
from . import _html as view

# Runs listed in the history tab.
HISTORY_SIZE = 25
# Streamed text reaches the front end at most this often, however fast the model is.
STREAM_INTERVAL_S = 0.05
# Top alternatives recorded per token for the debug view.
DEBUG_TOP = 5


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


def _slider(spec: ParamSpec, t: Callable[[str], str]) -> w.Widget:
    """A slider labelled as the guides name the parameter (its name, meaning and range in the tooltip);
    Max Tokens is a number box, whose range is too wide for a slider."""
    options: dict[str, Any] = {
        "value": spec.default,
        "min": spec.ui_min,
        "max": spec.ui_max,
        "description": t(spec.label),
        "description_allow_html": False,
        "tooltip": f"{spec.name}: {spec.description} ({spec.range_text()})",
        "style": {"description_width": "12.5em"},
        "layout": w.Layout(width="28em"),
    }
    if spec.name == "max_tokens":  # never clamped: a value past the context is refused with a message
        del options["min"], options["max"]
        options["tooltip"] = f"{spec.name}: {spec.description}; at most the loaded context (prompt and reply share it)"
        slider = w.IntText(**options)
    elif spec.type is int:
        slider = w.IntSlider(step=spec.ui_step, continuous_update=False, **options)
    else:
        slider = w.FloatSlider(step=spec.ui_step, continuous_update=False, readout_format=".2f", **options)
    slider.add_class(f"lmbench-param-{spec.name}")
    return slider


def folded(widget: w.Widget, title: str) -> w.Accordion:
    box = w.Accordion([widget], titles=(title,))
    box.selected_index = None
    return box


class ModelPicker:
    """Which model, with what settings: the discovered models (with their facts), a free path, the KV cache."""

    def __init__(self, host: Host, model: str | Engine | None) -> None:
        self.host = host
        t = host.t
        engine = model if isinstance(model, Engine) else None
        found = found_models()
        self.model = w.Combobox(
            value=str(engine.path if engine else model or ""),
            options=_choices(found, engine),
            placeholder=t("model: path, file name or alias (empty: $LMBENCH_MODEL or the default)"),
            ensure_option=False,
            layout=w.Layout(width="36em"),
        )
        self.model.add_class("lmbench-model")
        self.info = w.HTML(describe(engine.path if engine else model if isinstance(model, str) else None))
        self.info.add_class("lmbench-model-info")
        number = {"style": {"description_width": "initial"}}
        self.n_ctx = w.BoundedIntText(
            engine.n_ctx if engine else 2048,
            min=16,
            max=1 << 20,
            description=t("context length"),
            layout=w.Layout(width="16em"),
            **number,
        )
        self.n_threads = w.BoundedIntText(
            engine.threads.most if engine and engine.threads.fixed else 0,
            min=0,
            max=512,
            description=t("threads"),
            tooltip=t("0: as many as the machine leaves free, re-checked while decoding"),
            layout=w.Layout(width="12em"),
            **number,
        )
        self.parallel = w.BoundedIntText(
            engine.parallel if engine else 1,
            min=1,
            max=256,
            description=t("parallel"),
            tooltip="requests decoded together, each with the whole context (the KV cache grows with it)",
            layout=w.Layout(width="12em"),
            **number,
        )
        self.kv_info = w.HTML()
        self.kv_info.add_class("lmbench-kv-info")
        self.table = w.HTML(view.models_table(_with_loaded(found, engine), str(engine.path) if engine else None))
        self.table.add_class("lmbench-models")
        self.load_button = button(t("Load"), "", "Load the model now (Generate also loads it)", "lmbench-load")
        self.variants_button = button(
            t("Compare variants"), "", t("Drift of this model's quantized copies on the prompt"), "lmbench-variants"
        )
        self.variants_button.layout.width = "12em"
        self.variants_button.on_click(lambda _: host.start(self.compare_variants))
        self.variants_output = w.HTML()
        self.variants_output.add_class("lmbench-variants-output")
        settings = w.Accordion(
            [w.VBox([row([self.n_ctx, self.n_threads, self.parallel]), self.kv_info, self.table])],
            titles=(t("Load settings"),),
        )
        settings.selected_index = None
        self.box = w.VBox(
            [row([self.model, self.load_button, self.variants_button]), self.info, self.variants_output, settings]
        )

    @property
    def name(self) -> str | None:
        """The model asked for (None: the default model)."""
        return str(self.model.value).strip() or None

    def loaded(self, engine: Engine, first_time: bool) -> None:
        """Show a model just loaded (its facts, the table) and give it the panel's parallel slots."""
        if first_time:
            self.info.value = describe(engine.path)
            self.table.value = view.models_table(_with_loaded(found_models(), engine), str(engine.path))
        engine.parallel = self.parallel.value
        self.show_kv_cache(engine)

    def compare_variants(self) -> None:
        """The drift of the chosen model's quantized copies (``lmbench.quantize``) from it, on the prompt."""
        engine = self.host.load()
        base = str(engine.path.resolve())
        copies = [
            path for path, facts in models.variants().items() if facts["base"] == base and facts["kind"] == "quantized"
        ]
        if not copies:
            none = self.host.t("No quantized copies of this model yet: make some with lmbench.quantize")
            self.variants_output.value = f"<small>{html.escape(none)}</small>"
            return
        self.host.status(f"comparing {len(copies)} variants of {engine.name} on the prompt…")
        found = drift(engine.path, copies, texts=[self.host.prompt_text()], worst=3)
        self.variants_output.value = found._repr_html_()

    def show_kv_cache(self, engine: Engine | None) -> None:
        """The loaded model's KV cache: slots, cells each, memory (made at the first generation)."""
        if engine is None or engine.closed:
            self.kv_info.value = ""
            return
        status = engine.scheduler.status()
        if not status["slots"]:
            planned = f"{engine.parallel} x {engine.n_ctx} cells"
            self.kv_info.value = f"<small>KV cache: {planned}, made at the first generation</small>"
            return
        self.kv_info.value = (
            f"<small>KV cache: {status['slots']} slot(s) x {status['cells_per_slot']} cells, "
            f"{status['kv_cache_bytes'] / 2**20:.1f} MiB</small>"
        )


def describe(model: str | os.PathLike[str] | None) -> str:
    """Which model the panel uses (and, for the default, why), as one line of HTML."""
    try:
        return f"<small>model: {html.escape(models.describe(model))}</small>"
    except LmbenchError as exc:
        return f"<small>model: {html.escape(str(exc))}</small>"


def found_models() -> Any:
    """The models the model manager lists (None when the folders cannot be read)."""
    try:
        return models.list()
    except (LmbenchError, OSError):
        return None


def _choices(found: Any, engine: Engine | None) -> list[str]:
    aliases = [] if found is None else found.alias.dropna()
    return sorted({*aliases, *(e.path.as_posix() for e in [engine] if e is not None)})


def _with_loaded(found: Any, engine: Engine | None) -> Any:
    """The models found, plus the loaded one when it came from a path outside the model folders."""
    if engine is None or (found is not None and str(engine.path) in set(found.path.astype(str))):
        return found
    facts = engine.info
    listed = {
        "alias": models.model_id(engine.path),
        "path": str(engine.path),
        "size": engine.size,
        "parameters": facts.get("parameters"),
        "quantization": facts.get("quantization"),
        "context_length": facts.get("context_length"),
        "has_chat_template": facts.get("has_chat_template"),
        "source": "path",
    }
    return pd.DataFrame([listed]) if found is None else pd.concat([found, pd.DataFrame([listed])], ignore_index=True)


class ParamsForm:
    """Every generation parameter as a control (from the one parameter definition), and the presets."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.sliders: dict[str, w.Widget] = {s.name: _slider(s, t) for s in param_specs() if s.ui_min is not None}
        self.n_ctx = MAX_TOKENS  # until the panel says the context (follow_context)
        self.max_tokens_note = w.HTML()
        self.max_tokens_note.add_class("lmbench-max-tokens-note")
        self.seed = w.BoundedIntText(0, min=0, max=MAX_SEED, description=t("Seed"), disabled=True)
        self.random_seed = w.Checkbox(True, description=t("random seed"), indent=False)
        self.random_seed.observe(lambda change: setattr(self.seed, "disabled", change["new"]), names="value")
        self.stop = w.TagsInput(
            value=[], allow_duplicates=False, tooltip="Stop strings", layout=w.Layout(min_width="24em", width="auto")
        )
        self.json_schema = w.Textarea(
            placeholder='JSON schema, e.g. {"type": "object", "properties": {"answer": {"type": "string"}}}',
            rows=3,
            layout=w.Layout(width="100%"),
            tooltip=PARAM_SPECS["json_schema"].description,
        )
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
        self.preset = w.Dropdown(options=[], description=t("preset"))
        self.preset.observe(self._on_preset, names="value")
        self.preset_values = w.HTML()
        self.preset_name = w.Text(placeholder=t("name"), layout=w.Layout(width="10em"))
        self.save_preset_button = button(t("Save preset"), "", "Save the current sampler values", "lmbench-save-preset")
        self.save_preset_button.on_click(lambda _: self._save_preset())
        self._restoring = False
        self._refresh_presets()
        grid = w.GridBox(
            [*(w.VBox([v, self.max_tokens_note]) if k == "max_tokens" else v for k, v in self.sliders.items())],
            layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(28em, 1fr))"),
        )
        self.box = w.VBox(
            [
                grid,
                row([self.seed, self.random_seed, self.debug_tokens, self.raw, *self.toggles.values()]),
                row([w.Label(t("Stop Strings")), self.stop]),
                folded(self.json_schema, t("Structured output (JSON schema)")),
                row([self.preset, self.preset_name, self.save_preset_button]),
                self.preset_values,
            ]
        )

    def values(self) -> dict[str, Any]:
        """The generation parameters the controls describe now."""
        values: dict[str, Any] = {name: slider.value for name, slider in self.sliders.items()}
        if values["max_tokens"] > self.n_ctx:
            raise ParameterError(
                self.host.t(
                    "Max Tokens {value} is more than the context of {n_ctx} tokens, which the prompt and the reply "
                    "share: give at most {n_ctx}, or load the model with a larger context"
                ).format(value=values["max_tokens"], n_ctx=self.n_ctx),
                name="max_tokens",
                value=values["max_tokens"],
            )
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
                if name != "max_tokens":
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
        if "logprobs" in values:
            self.debug_tokens.value = values["logprobs"] is not None

    def follow_context(self, n_ctx: int) -> None:
        """Max Tokens can reach the model's context length (the prompt and the reply share it)."""
        self.n_ctx = int(n_ctx)
        note = self.host.t("at most {n_ctx} (the context)").format(n_ctx=self.n_ctx)
        self.max_tokens_note.value = f"<small>{html.escape(note)}</small>"

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
            self.host.show_error(exc)
            return
        self.host.event(f"saved preset {name!r}")
        self._refresh_presets(select=name)


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
            raise ParameterError(
                f"compare values must be numbers separated by commas, not {self.values.value!r}",
                name=name,
                value=self.values.value,
            ) from None
        if not 2 <= len(values) <= 4:
            raise ParameterError(f"compare needs 2 to 4 values of {name}, got {len(values)}", name=name, value=values)
        params = self.host.values()
        if params["seed"] is None:  # one seed for all, so only the compared parameter differs
            params["seed"] = random_seed()
        engine = self.host.load()
        self.host.status(f"comparing {len(values)} values of {name}, decoded together…")
        labels = Labels(self.host.experiment_name(), source="panel")
        turn = self.host.turn(engine)
        jobs = [Job.of(turn, validate_params({**params, name: value}), labels) for value in values]
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
        self.stop_button = button(t("Stop"), "danger", "Stop the reply", "lmbench-chat-stop")
        self.stop_button.disabled = True
        self.stop_button.on_click(lambda _: host.cancel.set())
        new_chat = button(t("New chat"), "", "Forget the conversation", "lmbench-new-chat")
        new_chat.on_click(lambda _: self.new())
        self.render()
        self.box = w.VBox(
            [
                self.system,
                self.transcript,
                self.input,
                row([self.send_button, self.stop_button, self.regenerate_button, new_chat]),
            ]
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
            logging.getLogger("lmbench.serve").removeHandler(self._handler)
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
        api_log = logging.getLogger("lmbench.serve")
        api_log.setLevel(logging.INFO)
        api_log.addHandler(self._handler)
        self.button.description, self.button.button_style = t("Stop server"), "danger"
        self.info.value = view.server_info(url, settings.api_key, self._example_request(), server.service.default_id)
        self.host.event(f"API server on {url} (model {server.service.default_id})")

    def _example_request(self) -> dict[str, Any]:
        """The examples' request: the panel's prompt (or the guides' own) and its main settings."""
        try:
            values = self.host.values()
        except LmbenchError:  # a setting the form refuses: the examples keep the guides' values
            values = {}
        request: dict[str, Any] = {"prompt": self.host.prompt_text().strip() or "Once upon a time"}
        request.update({k: values[k] for k in ("temperature", "top_p", "max_tokens") if k in values})
        return request

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
