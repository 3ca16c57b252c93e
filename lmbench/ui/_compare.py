"""The Compare tab: one prompt under 2 to 4 settings side by side, each column filling as it generates.

What is compared is values of one parameter, presets, or models. One engine's columns are decoded
together (with one seed, so only the compared setting differs); models are generated one after
another, each through its own template rule. The prompt is shown once, as asked, above the columns;
under each column its tokens, speed, ending and metrics by the names the metrics registry gives them.
"""

from __future__ import annotations

import dataclasses
import html
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w

from ..engine._engine import Engine, load_engine
from ..errors import ParameterError
from ..generation import Job, Recorder, generate_many, random_seed
from ..metrics import label_of
from ..params import validate_params
from ..presets import resolve_preset
from ..run import BORDER, Labels, Run
from ._parts import Host, Throttled, button, row

MODES = ("parameter", "presets", "models")
# What each mode's values box holds by default, and says it wants.
_DEFAULTS = {"parameter": "0.2, 0.7, 1.2", "presets": "precise, creative", "models": ""}
_HINTS = {
    "parameter": "2 to 4 values, comma-separated",
    "presets": "2 to 4 preset names, comma-separated",
    "models": "2 to 4 models (paths or names), comma-separated",
}
# The metrics under each column, by their registered names.
COLUMN_METRICS = ("distinct_2", "mean_logprob")


@dataclass
class _Column:
    """One compared setting: its title, its generation values, the model it runs on (None: the panel's)."""

    title: str
    params: dict[str, Any]
    model: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # known before it runs: its run is found by it
    stream: Throttled | None = None
    run: Run | None = None


class CompareTab:
    """The prompt at 2 to 4 values of one parameter, presets or models, side by side as they generate."""

    def __init__(self, host: Host, numeric: list[str], kind: Callable[[str], type]) -> None:
        self.host, self._kind = host, kind
        t = host.t
        self.mode = w.Dropdown(
            options=[(t(m), m) for m in MODES],
            value="parameter",
            description=t("compare"),
            layout=w.Layout(width="16em"),
        )
        self.mode.add_class("lmbench-compare-mode")
        self.mode.observe(lambda _: self._mode_changed(), names="value")
        self.param = w.Dropdown(options=numeric, value="temperature", description=t("parameter"))
        self.param.add_class("lmbench-compare-param")
        self.values = w.Text(_DEFAULTS["parameter"], description=t("values"), tooltip=t(_HINTS["parameter"]))
        self.values.add_class("lmbench-compare-values")
        self.button = button(t("Compare"), "info", t("Run the prompt with each setting"), "lmbench-compare")
        self.button.on_click(lambda _: host.start(self.job))
        self.output = w.HTML()
        self.output.add_class("lmbench-compare-output")
        self.box = w.VBox([row([self.mode, self.param, self.values, self.button]), self.output])
        self.box.add_class("lmbench-compare-tab")
        self._columns: list[_Column] = []
        self._prompt = ""

    def _mode_changed(self) -> None:
        mode = self.mode.value
        self.param.layout.display = "" if mode == "parameter" else "none"
        self.values.value = _DEFAULTS[mode] if mode != "models" else f"{self._panel_model()}, "
        self.values.tooltip = self.host.t(_HINTS[mode])
        self.values.placeholder = self.host.t(_HINTS[mode])

    def _panel_model(self) -> str:
        """The picker's model and context (as the panel's API server would serve them)."""
        return str(self.host.server_settings(None).model or "")

    def columns(self) -> list[_Column]:
        """The settings the values box names in the chosen mode, or ``ParameterError`` saying what is wrong."""
        mode, given = self.mode.value, [v.strip() for v in self.values.value.split(",") if v.strip()]
        if not 2 <= len(given) <= 4:
            what = {"parameter": f"values of {self.param.value}", "presets": "presets", "models": "models"}[mode]
            raise ParameterError(f"compare needs 2 to 4 {what}, got {len(given)}", name="values", value=given)
        params = self.host.values()
        if params["seed"] is None:  # one seed for all, so only the compared setting differs
            params["seed"] = random_seed()
        if mode == "parameter":
            name = self.param.value
            try:
                values = [self._kind(name)(v) for v in given]
            except ValueError:
                raise ParameterError(
                    f"compare values must be numbers separated by commas, not {self.values.value!r}",
                    name=name,
                    value=self.values.value,
                ) from None
            return [_Column(f"{name} = {v}", validate_params({**params, name: v}).model_dump()) for v in values]
        if mode == "presets":
            return [
                _Column(preset, validate_params({**params, **resolve_preset(preset)}).model_dump()) for preset in given
            ]
        return [_Column(model, dict(params), model) for model in given]

    def job(self) -> None:
        columns = self.columns()  # every setting checked before anything is generated
        if not self.host.prompt_text().strip():
            raise ParameterError("type a prompt first: the prompt box is empty", name="prompt")
        self._columns, self._prompt = columns, self.host.prompt_text()
        labels = Labels(self.host.experiment_name(), source="panel")
        recorder = Recorder(self.host.store, on_run=self._finished)
        for column in columns:
            column.stream = Throttled(lambda _: self._draw())
        self.host.status(self.host.t("comparing…"))
        try:
            if self.mode.value == "models":
                n_ctx = self.host.server_settings(None).n_ctx
                for column in columns:  # one model at a time, each with the panel's context length
                    if self.host.cancel.is_set():
                        break
                    engine = load_engine(column.model, n_ctx=n_ctx)
                    generate_many(engine, self._jobs(engine, [column], labels), recorder, cancel=self.host.cancel)
            else:
                engine = self.host.load()
                generate_many(
                    engine, self._jobs(engine, columns, labels), recorder, cancel=self.host.cancel, slots=len(columns)
                )
        finally:  # what finished is shown, also when the comparison was stopped or failed
            self._draw()

    def _jobs(self, engine: Engine, columns: list[_Column], labels: Labels) -> list[Job]:
        """The columns' jobs on ``engine``: the panel's prompt by its rule, each under its column's run id."""
        turn = self.host.turn(engine)
        return [
            Job.of(turn, validate_params(c.params), dataclasses.replace(labels, run_id=c.run_id), c.stream)
            for c in columns
        ]

    def _finished(self, run: Run) -> None:
        column = next(c for c in self._columns if c.run_id == run.id)
        column.run = run
        self.host.made(run)
        self._draw()

    def _draw(self) -> None:
        self.output.value = _grid(self._prompt, self._columns, self.host.t)


def _note(run: Run, t: Callable[[str], str]) -> str:
    """A run's tokens, speed, ending and metrics, by their names in words."""
    parts = [f"{run.completion_tokens} {t('tokens')}"]
    if run.tokens_per_s and math.isfinite(run.tokens_per_s):
        parts.append(f"{run.tokens_per_s:.1f} tok/s")
    parts.append(f"{t('finish')}: {t(run.finish_reason)}")
    for name in COLUMN_METRICS:
        value = run.metrics.get(name)
        if value is not None and math.isfinite(value):
            parts.append(f"{t(label_of(name))} {value:.2f}")
    return " · ".join(parts)


def _grid(prompt: str, columns: list[_Column], t: Callable[[str], str]) -> str:
    """The prompt as asked, once, then a column per setting with its text so far (or its run's text)."""
    cells = []
    for column in columns:
        run, stream = column.run, column.stream
        text = run.text if run is not None else (stream.text if stream is not None else "")
        note = _note(run, t) if run is not None else t("generating…")
        cells.append(
            f"<div class='lmbench-compare-column' style='{BORDER};border-radius:6px;padding:6px 8px;min-width:0'>"
            f"<div style='font-weight:bold;overflow-wrap:anywhere'>{html.escape(column.title)}</div>"
            "<div class='lmbench-compare-text' style='white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.45;"
            f"max-height:24em;overflow:auto;margin:4px 0'>{html.escape(text)}</div>"
            f"<div class='lmbench-compare-note' style='opacity:0.75;font-size:85%'>{html.escape(note)}</div></div>"
        )
    asked = (
        f"<div class='lmbench-compare-prompt' style='white-space:pre-wrap;overflow-wrap:anywhere;max-height:8em;"
        f"overflow:auto;opacity:0.85;margin-bottom:6px'><b>{html.escape(t('Prompt'))}</b>: {html.escape(prompt)}</div>"
    )
    return (
        f"<div style='color:var(--jp-content-font-color1,inherit)'>{asked}<div class='lmbench-compare-grid' "
        f"style='display:grid;grid-template-columns:repeat({max(len(columns), 1)},minmax(0,1fr));gap:8px'>"
        f"{''.join(cells)}</div></div>"
    )
