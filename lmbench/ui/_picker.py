"""The model picker: a dropdown of the models found (with their facts, searchable, the loaded one marked),
a free path behind "Other file…", the KV cache settings."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd

from .. import models
from .._gguf import readable_count
from ..engine._engine import Engine
from ..errors import LmbenchError
from ..variants_lab import drift
from . import _html as view
from ._parts import Host, button, row

# The dropdown's value for "a file not in the list": the path box beside it says which.
OTHER = "\0other"


class ModelPicker:
    """Which model, with what settings: the models found (name, size, quantization, chat, source) in a
    searchable dropdown, any other file by path, the KV cache."""

    def __init__(self, host: Host, model: str | Engine | None) -> None:
        self.host = host
        t = host.t
        engine = model if isinstance(model, Engine) else None
        asked = engine.path if engine is not None else model if not isinstance(model, Engine) else None
        self._rows = _with(found_models(), models.default_model() if asked is None else asked, engine)
        # The loaded model's row (its path as the list writes it), marked in the dropdown and the table.
        self._loaded = _find(self._rows, str(engine.path)) if engine is not None else None
        self.model = w.Dropdown(description=t("Model"), layout=w.Layout(width="min(40em, 100%)"))
        self.model.style.description_width = "initial"
        self.model.add_class("lmbench-model")
        self.search = w.Text(placeholder=t("search models"), layout=w.Layout(width="12em"))
        self.search.add_class("lmbench-model-search")
        self.search.observe(lambda _: self._refresh_options(), names="value")
        self.path = w.Text(
            placeholder=t("model: path, file name or alias (empty: $LMBENCH_MODEL or the default)"),
            layout=w.Layout(width="min(36em, 100%)", display="none"),
        )
        self.path.add_class("lmbench-model-path")
        self.model.observe(lambda _: self._on_choice(), names="value")
        self.info = w.HTML()
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
            tooltip=t("requests decoded together, each with the whole context (the KV cache grows with it)"),
            layout=w.Layout(width="14em"),
            **number,
        )
        self.kv_info = w.HTML()
        self.kv_info.add_class("lmbench-kv-info")
        self.table = w.HTML()
        self.table.add_class("lmbench-models")
        self.load_button = button(t("Load"), "", t("Load the model now (Generate also loads it)"), "lmbench-load")
        self.variants_button = button(
            t("Compare variants"), "", t("Drift of this model's quantized copies on the prompt"), "lmbench-variants"
        )
        self.variants_button.layout.width = "auto"
        self.variants_button.on_click(lambda _: host.start(self.compare_variants))
        self.variants_output = w.HTML()
        self.variants_output.add_class("lmbench-variants-output")
        settings = w.Accordion(
            [w.VBox([row([self.n_ctx, self.n_threads, self.parallel]), self.kv_info, self.table])],
            titles=(t("Load settings"),),
        )
        settings.selected_index = None
        self._default = _find(self._rows, models.default_model())
        self._choosing = False
        self.choose(asked)
        self.box = w.VBox(
            [
                row([self.model, self.search, self.load_button, self.variants_button]),
                self.path,
                self.info,
                self.variants_output,
                settings,
            ]
        )

    @property
    def name(self) -> str | None:
        """The model asked for: the file chosen in the list, else the path box (None: the default model)."""
        if self.model.value == OTHER:
            return str(self.path.value).strip() or None
        return str(self.model.value)

    def choose(self, model: str | os.PathLike[str] | None) -> None:
        """Select ``model`` (a path, file name or alias; None: the default model) in the list; a model not
        among those found goes in the path box behind "Other file…"."""
        wanted = None if model is None else os.fspath(model)
        listed = self._default if wanted is None else _find(self._rows, wanted)
        if listed is None and wanted is not None and Path(wanted).is_file():
            self._rows = _with(self._rows, wanted, None)
            listed = _find(self._rows, wanted)
        self.search.value = ""
        if listed is None:
            self.path.value = wanted or ""
        self._refresh_options(select=OTHER if listed is None else listed)

    def loaded(self, engine: Engine, first_time: bool) -> None:
        """Show a model just loaded (chosen and marked in the list, its facts, the table) and give it the
        panel's parallel slots."""
        if first_time:
            self._rows = _with(self._rows, engine.path, engine)
            self._loaded = _find(self._rows, str(engine.path))
            self.choose(engine.path)
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
        self.host.status(f"{self.host.t('comparing variants…')} ({len(copies)})")
        found = drift(engine.path, copies, texts=[self.host.prompt_text()], worst=3)
        self.variants_output.value = found._repr_html_()

    def show_kv_cache(self, engine: Engine | None) -> None:
        """The loaded model's KV cache: slots, cells each, memory (made at the first generation)."""
        t = self.host.t
        if engine is None or engine.closed:
            self.kv_info.value = ""
            return
        status = engine.scheduler.status()
        if not status["slots"]:
            line = t("KV cache: {slots} x {cells} cells, made at the first generation").format(
                slots=engine.parallel, cells=engine.n_ctx
            )
        else:
            line = t("KV cache: {slots} slot(s) x {cells} cells, {mib:.1f} MiB").format(
                slots=status["slots"], cells=status["cells_per_slot"], mib=status["kv_cache_bytes"] / 2**20
            )
        self.kv_info.value = f"<small>{html.escape(line)}</small>"

    def _refresh_options(self, select: str | None = None) -> None:
        """The dropdown's options: the models whose facts match the search words (the chosen one always),
        then "Other file…"."""
        t = self.host.t
        current = self.model.value if select is None else select
        words = str(self.search.value).lower().split()
        options = []
        for listed in self._listed():
            label = _label(listed, t, loaded=listed["path"] == self._loaded, default=listed["path"] == self._default)
            if listed["path"] == current or all(word in f"{label} {listed['path']}".lower() for word in words):
                options.append((label, listed["path"]))
        options.append((t("Other file…"), OTHER))
        self._choosing = True
        try:
            self.model.options = options
            self.model.value = current if current in {value for _, value in options} else OTHER
        finally:
            self._choosing = False
        self._on_choice()
        self.table.value = view.models_table(self._rows, self._loaded, t)

    def _listed(self) -> list[dict[str, Any]]:
        return [] if self._rows is None else [dict(r) for _, r in self._rows.iterrows()]

    def _on_choice(self) -> None:
        """The path box shows for "Other file…"; the line under the picker says what the choice is."""
        if self._choosing:
            return
        other = self.model.value == OTHER
        self.path.layout.display = None if other else "none"
        t = self.host.t
        if other:
            hint = t("a .gguf path, file name or alias: Load (or Generate) loads it")
            self.info.value = f"<small>{html.escape(hint)}</small>"
            return
        chosen = next(r for r in self._listed() if r["path"] == self.model.value)
        line = _model_line(chosen, t, default=chosen["path"] == self._default)
        self.info.value = f"<small>{html.escape(line)}</small>"


def found_models() -> Any:
    """The models the model manager lists (None when the folders cannot be read)."""
    try:
        return models.list()
    except (LmbenchError, OSError):
        return None


def _find(found: Any, wanted: str) -> str | None:
    """The listed path that ``wanted`` (a path, file name or alias) names, if any."""
    if found is None or not len(found):
        return None
    paths = [str(p) for p in found.path]
    if wanted in paths:
        return wanted
    for path, alias in zip(paths, found.alias, strict=True):
        if wanted in (alias, Path(path).name):
            return path
    target = Path(wanted).expanduser()
    if target.is_file():
        real = target.resolve()
        return next((path for path in paths if Path(path).resolve() == real), None)
    return None


def _with(found: Any, model: str | os.PathLike[str] | None, engine: Engine | None) -> Any:
    """The models found, plus ``model`` when it is a file outside the model folders (its facts read from
    the loaded ``engine`` or the file's header)."""
    if model is None or (found is not None and _find(found, os.fspath(model)) is not None):
        return found
    path = Path(model).expanduser()
    if not path.is_file():
        return found
    try:
        facts = engine.info if engine is not None else models.metadata(path.resolve())
    except LmbenchError:
        return found
    listed = {
        "alias": models.model_id(path),
        "path": str(path),
        "size": path.stat().st_size,
        "parameters": facts.get("parameters"),
        "quantization": facts.get("quantization"),
        "context_length": facts.get("context_length"),
        "has_chat_template": facts.get("has_chat_template"),
        "source": "path",
    }
    return pd.DataFrame([listed]) if found is None else pd.concat([found, pd.DataFrame([listed])], ignore_index=True)


def _known(value: Any) -> bool:
    return value is not None and value == value  # NaN (a column the row lacks) is unknown


def _chat(listed: dict[str, Any]) -> bool:
    value = listed.get("has_chat_template")
    return _known(value) and bool(value)


def _label(listed: dict[str, Any], t: Any, *, loaded: bool, default: bool) -> str:
    """One model as the dropdown shows it: name (loaded? the default?), size, parameters, quantization, chat
    or not, source: the marks come first, so a narrow screen cuts the source, not them."""
    flags = [t(flag) for flag, on in (("loaded", loaded), ("default", default)) if on]
    parts = [
        str(listed["alias"]) + (f" ({', '.join(flags)})" if flags else ""),
        f"{listed['size'] / 2**20:,.1f} MiB",
        readable_count(int(listed["parameters"])) if _known(listed.get("parameters")) else "?",
        str(listed["quantization"]) if _known(listed.get("quantization")) else "?",
        t("chat") if _chat(listed) else t("no chat"),
        t(str(listed["source"])),
    ]
    return " · ".join(parts)


def _model_line(listed: dict[str, Any], t: Any, *, default: bool) -> str:
    """Which model the panel uses (and, for the default, why), its facts, where it comes from."""
    why = ""
    if default:
        why = " ($LMBENCH_MODEL)" if os.environ.get("LMBENCH_MODEL") else f" ({t('default')})"
    chat = t("chat template") if _chat(listed) else t("no chat template")
    if listed["source"] == "package" and _known(listed.get("distribution")):
        origin = t("the {name} {version} package").format(name=listed["distribution"], version=listed["version"])
    else:
        origin = str(listed["path"])
    parameters = readable_count(int(listed["parameters"])) if _known(listed.get("parameters")) else "?"
    return (
        f"{t('model')}: {listed['alias']}{why}: {Path(listed['path']).name}, {parameters} {t('parameters')}, "
        f"{listed['quantization']}, {chat}, {t('from')} {origin}"
    )
