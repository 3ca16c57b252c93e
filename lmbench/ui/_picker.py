"""The model picker: the models found (with their facts), a free path, the KV cache settings."""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as w
import pandas as pd

from .. import models
from ..engine._engine import Engine
from ..errors import LmbenchError
from ..variants_lab import drift
from . import _html as view
from ._parts import Host, button, row


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
