"""The parameters form: every generation parameter as a control, from the one parameter definition, and the presets."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import LmbenchError, ParameterError
from ..params import MAX_SEED, MAX_TOKENS, PARAM_SPECS, ParamSpec, param_specs
from ..presets import presets, resolve_preset, save_preset
from . import _html as view
from ._parts import Host, button, folded, row

# Top alternatives recorded per token for the debug view.
DEBUG_TOP = 5


def _label_width(t: Callable[[str], str]) -> float:
    """The width (em) of the form's label column: the longest parameter label in the panel's language fits."""
    return max(12.5, 0.62 * max(len(t(spec.label)) for spec in param_specs()) + 1)


def _slider(spec: ParamSpec, t: Callable[[str], str]) -> w.Widget:
    """A slider labelled as the guides name the parameter (its name, meaning and range in the tooltip);
    Max Tokens is a number box, whose range is too wide for a slider."""
    options: dict[str, Any] = {
        "value": spec.default,
        "min": spec.ui_min,
        "max": spec.ui_max,
        "description": t(spec.label),
        "description_allow_html": False,
        "tooltip": f"{spec.name}: {t(spec.description)} ({spec.range_text()})",
        "style": {"description_width": f"{_label_width(t):.1f}em"},
        "layout": w.Layout(width=f"{_label_width(t) + 15.5:.1f}em"),
    }
    if spec.name == "max_tokens":  # never clamped: a value past the context is refused with a message
        del options["min"], options["max"]
        limit = t("at most the loaded context (prompt and reply share it)")
        options["tooltip"] = f"{spec.name}: {t(spec.description)}; {limit}"
        slider = w.IntText(**options)
    elif spec.type is int:
        slider = w.IntSlider(step=spec.ui_step, continuous_update=False, **options)
    else:
        slider = w.FloatSlider(step=spec.ui_step, continuous_update=False, readout_format=".2f", **options)
    slider.add_class(f"lmbench-param-{spec.name}")
    return slider


class ParamsForm:
    """Every generation parameter as a control (from the one parameter definition), and the presets."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.sliders: dict[str, w.Widget] = {s.name: _slider(s, t) for s in param_specs() if s.ui_min is not None}
        self.n_ctx = MAX_TOKENS  # until the panel says the context (follow_context)
        self.max_tokens_note = w.HTML()
        self.max_tokens_note.add_class("lmbench-max-tokens-note")
        self.seed = w.BoundedIntText(
            0, min=0, max=MAX_SEED, description=t("Seed"), disabled=True, style={"description_width": "initial"}
        )
        self.random_seed = w.Checkbox(True, description=t("random seed"), indent=False, layout=w.Layout(width="auto"))
        self.random_seed.observe(lambda change: setattr(self.seed, "disabled", change["new"]), names="value")
        self.stop = w.TagsInput(
            value=[],
            allow_duplicates=False,
            placeholder=t("type a string, Enter adds it"),
            tooltip=f"stop: {t(PARAM_SPECS['stop'].description)}",
            layout=w.Layout(width="100%"),
        )
        self.stop.add_class("lmbench-stop-strings")
        self.json_schema = w.Textarea(
            placeholder=t("JSON schema, e.g.") + ' {"type": "object", "properties": {"answer": {"type": "string"}}}',
            rows=3,
            layout=w.Layout(width="100%"),
            tooltip=f"json_schema: {t(PARAM_SPECS['json_schema'].description)}",
        )
        self.json_schema.add_class("lmbench-json-schema")
        self.debug_tokens = w.Checkbox(
            True, description=t("record token probabilities"), indent=False, layout=w.Layout(width="auto")
        )
        self.raw = w.Checkbox(
            False,
            description=t("raw completion"),
            indent=False,
            layout=w.Layout(width="auto"),
            tooltip=t(
                "Complete the prompt as it is; off: an instruct model gets it as a user message through its "
                "chat template"
            ),
        )
        self.toggles = {
            s.name: w.Checkbox(
                s.default,
                description=t(s.label),
                tooltip=f"{s.name}: {t(s.description)}",
                indent=False,
                layout=w.Layout(width="auto"),
            )
            for s in param_specs()
            if s.type is bool
        }
        self.preset = w.Dropdown(options=[], description=t("preset"), style={"description_width": "initial"})
        self.preset.observe(self._on_preset, names="value")
        self.preset_values = w.HTML()
        self.preset_name = w.Text(placeholder=t("name"), layout=w.Layout(width="10em"))
        self.save_preset_button = button(
            t("Save preset"), "", t("Save the current sampler values under this name"), "lmbench-save-preset"
        )
        self.save_preset_button.layout.width = "auto"
        self.save_preset_button.on_click(lambda _: self._save_preset())
        self._restoring = False
        self._refresh_presets()
        grid = w.GridBox(
            [*(w.VBox([v, self.max_tokens_note]) if k == "max_tokens" else v for k, v in self.sliders.items())],
            layout=w.Layout(grid_template_columns=f"repeat(auto-fill, minmax({_label_width(t) + 15.5:.1f}em, 1fr))"),
        )
        self.box = w.VBox(
            [
                grid,
                row([self.seed, self.random_seed, self.debug_tokens, self.raw, *self.toggles.values()]),
                # The whole width of the panel: the strings stay readable.
                w.VBox([w.Label(t("Stop Strings")), self.stop], layout=w.Layout(width="100%")),
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
                message = self.host.t("the JSON schema box does not hold JSON: {error}").format(error=exc)
                raise ParameterError(message, name="json_schema") from None
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
            self.preset.options = [("—", None), *((self.host.t(name), name) for name in presets())]
            self.preset.value = select
        finally:
            self._restoring = False

    def _on_preset(self, change: dict[str, Any]) -> None:
        name = change["new"]
        if name is None:
            self.preset_values.value = ""
            return
        values = resolve_preset(name)
        self.preset_values.value = view.preset(self.host.t(name), values, self.host.t)
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
        self.host.event(self.host.t("saved preset {name!r}").format(name=name))
        self._refresh_presets(select=name)
