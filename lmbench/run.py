"""``Run``: the record of one generation, as kept in the store and shown in a notebook."""

from __future__ import annotations

import html
import json
import math
import types
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, get_type_hints

from .params import PARAM_NAMES, PARAM_SPECS, GenerationParams, check_labels

FINISH_REASONS = ("stop", "length", "cancelled", "error")
# What a run measured: a generation, or the model scoring given text (``lmbench.likelihood``).
KINDS = ("generate", "loglikelihood", "perplexity", "choice")
# Colours for HTML views that follow JupyterLab's theme (light or dark), with fallbacks elsewhere.
MUTED = "color:var(--jp-content-font-color2,#666)"
BORDER = "border:1px solid var(--jp-border-color2,#ddd)"


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None, all the way down (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def describe_mode(chat_format: str | None) -> str:
    """How a run's prompt was sent, in the words every view shows: ``"chat template (gguf)"`` or ``"raw text"``."""
    return f"chat template ({chat_format})" if chat_format else "raw text"


@dataclass(frozen=True)
class Labels:
    """What a run is filed under, set before it starts: experiment, tags, where it came from, its id, and
    (for sweeps and chats) its sweep, coordinates, data-set row, messages, chat format and offered tools, and
    (for a fork) the run it continues and the token position it forks at; a chat turn, its conversation."""

    experiment: str | None = None
    tags: tuple[str, ...] = ()
    source: str = "python"
    run_id: str | None = None
    sweep_id: str | None = None
    sweep_coords: dict[str, Any] | None = None
    item: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    chat_format: str | None = None
    parent_id: str | None = None
    fork_position: int | None = None
    tools: list[dict[str, Any]] | None = None
    conversation_id: str | None = None

    @classmethod
    def checked(
        cls, experiment: Any = None, tags: Any = None, source: Any = "python", run_id: str | None = None
    ) -> Labels:
        """Labels from a caller's values, refused with ``ParameterError`` before anything is generated."""
        return cls(experiment, tuple(check_labels(experiment, tags, source)), source, run_id)

    def fields(self) -> dict[str, Any]:
        """The ``Run`` fields these labels fill (all but the id)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run_id"}
        values["tags"] = list(self.tags)
        return values


@dataclass
class Run:
    """One recorded generation: prompt, output, every parameter, the seed used, timings and metrics.

    ``prompt`` is what was asked (the text typed, or a conversation's last user message) and
    ``prompt_sent`` the text the model continued (through the chat template when ``chat_format``
    says one was used); ``stop`` holds the stop strings asked for, the template's own are implied.

    Timings: ``load_s`` is the model load this call caused (0 when the model was already
    loaded), ``ttft_s`` the time from start to the first generated token (prompt evaluation
    included), ``total_s`` the whole generation, and ``tokens_per_s`` the decode speed after the
    first token, ``(completion_tokens - 1) / (total_s - ttft_s)``. The clock starts when the run
    joins the batch (see ``lmbench._scheduler``); ``batch_size`` is the most runs that shared a
    decode with it and ``prompt_cached_tokens`` how many prompt tokens came from the KV cache.
    With speculative decoding (``draft``), ``drafted_tokens`` were drafted and ``accepted_tokens`` of
    them kept: ``accepted_tokens / drafted_tokens`` is the acceptance rate.

    ``lora`` holds the LoRA adapters the model ran with (file -> scale) and ``lora_scale`` the
    scale of a single one.

    ``kind`` (one of ``KINDS``) says what the run measured: a generation, or the model scoring
    given text (the prompt as context, ``text`` as the scored continuation; the result in
    ``metrics`` and per token in ``token_logprobs``; the generation parameters do not apply).
    """

    id: str
    created_at: datetime
    prompt: str
    text: str
    params: GenerationParams
    model_path: str
    model_name: str
    model_size: int
    model_sha256: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    load_s: float = 0.0
    ttft_s: float | None = None
    total_s: float = 0.0
    tokens_per_s: float | None = None
    prompt_cached_tokens: int = 0
    n_ctx: int | None = None
    n_threads: int | None = None
    batch_size: int = 1
    drafted_tokens: int = 0  # speculative decoding (``draft``): tokens drafted, and of them the tokens kept
    accepted_tokens: int = 0
    experiment: str | None = None
    tags: list[str] = field(default_factory=list)
    source: str = "python"
    error: str | None = None
    lmbench_version: str = ""
    llama_cpp_version: str = ""
    token_logprobs: list[dict[str, Any]] | None = None
    messages: list[dict[str, Any]] | None = None
    chat_format: str | None = None
    prompt_sent: str | None = None  # the text the model continued (the chat template's rendering of ``prompt``)
    tools: list[dict[str, Any]] | None = None  # the tools a chat offered (see lmbench.tools)
    tool_calls: list[dict[str, Any]] | None = None  # the calls the model made, in OpenAI's shape
    stop_word: str | None = None
    item: dict[str, Any] | None = None  # the data-set row a sweep filled its template with (id, vars, reference)
    sweep_id: str | None = None
    sweep_coords: dict[str, Any] | None = None
    # What shaped the numbers besides the parameters: the sequence slots and tokens per decode of the
    # context it ran in, its KV cache type, and the id of the machine's facts (``lmbench.environments()``).
    slots: int | None = None
    n_batch: int | None = None
    kv_cache_type: str | None = None
    environment: str | None = None
    parent_id: str | None = None  # a fork: the run it continues, from its token at fork_position
    fork_position: int | None = None
    kind: str = "generate"
    lora: dict[str, float] | None = None  # the LoRA adapters applied (file -> scale)
    lora_scale: float | None = None  # the scale of the one adapter applied (None without, or with several)
    conversation_id: str | None = None  # a chat turn: the conversation it belongs to (see Store.save_conversation)
    metrics: dict[str, float] = field(default_factory=dict)
    # The facts ``environment`` names, written once per id to the store's environments table (not a column).
    environment_facts: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def prompt_mode(self) -> str:
        """``"chat template (gguf)"``, ``"chat template (plain)"`` or ``"raw text"``: how the prompt was sent."""
        return describe_mode(self.chat_format)

    @property
    def seed(self) -> int:
        """The seed actually used (drawn at random when none was given)."""
        assert self.params.seed is not None
        return self.params.seed

    def __getattr__(self, name: str) -> Any:
        if name in PARAM_NAMES:
            return getattr(self.params, name)
        raise AttributeError(f"'Run' object has no attribute {name!r}")

    def values(self) -> dict[str, Any]:
        """Every column's value as Python holds it (parameters flattened in)."""
        values = {c.name: getattr(self, c.name) for c in COLUMNS}  # __getattr__ answers the parameters
        values["stop"] = list(self.params.stop)
        return values

    def to_record(self) -> dict[str, Any]:
        """The store's row: one SQL value per column."""
        return {c.name: c.encode(value) for c, value in zip(COLUMNS, self.values().values(), strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values (lists and dicts, times as ISO text, NaN as None), metrics included."""
        values = self.values()
        values["created_at"] = self.created_at.isoformat()
        return _json_ready({**values, "metrics": dict(self.metrics)})

    @classmethod
    def from_record(cls, record: dict[str, Any], metrics: dict[str, float] | None = None) -> Run:
        """Rebuild a run from a store row (every column is there: migrations backfill new ones)."""
        values = {c.name: c.decode(record[c.name]) for c in COLUMNS}
        params = {name: values.pop(name) for name in PARAM_NAMES}
        return cls(params=GenerationParams(**params), metrics=dict(metrics or {}), **values)

    def _repr_html_(self) -> str:
        stats = [
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens",
            f"TTFT {self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "",
            f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s and math.isfinite(self.tokens_per_s) else "",
            f"finish: {self.finish_reason}",
            self.prompt_mode,
            f"seed {self.seed}",
            self.environment_line(),
        ]
        params = ", ".join(
            f"{k}={getattr(self.params, k)!r}"
            for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")
        )
        error = (
            f"<div style='color:var(--jp-error-color1,#b00020)'>{html.escape(self.error)}</div>" if self.error else ""
        )
        return (
            f"<div class='lmbench-run' style='font-family:sans-serif;{BORDER};"
            "border-radius:6px;padding:8px 12px;max-width:60em'>"
            f"<div style='{MUTED};font-size:85%'>{html.escape(self.model_name)} · {params}</div>"
            f"<div style='white-space:pre-wrap;margin:6px 0'><span style='{MUTED}'>"
            f"{html.escape(self.prompt)}</span>{html.escape(self.text)}</div>{error}"
            f"<div style='{MUTED};font-size:85%'>{' · '.join(s for s in stats if s)} · run {self.id[:8]}</div>"
            "</div>"
        )

    def environment_line(self) -> str:
        """What the run's numbers depend on besides its parameters, in one line (empty for older runs)."""
        if self.environment is None:
            return ""
        parts = [
            f"{self.n_threads} threads" if self.n_threads else "",
            f"{self.slots} slots, batch {self.batch_size}" if self.slots else "",
            f"KV {self.kv_cache_type}" if self.kv_cache_type else "",
            f"llama-cpp-python {self.llama_cpp_version}, env {self.environment}",
        ]
        return ", ".join(p for p in parts if p)

    def __repr__(self) -> str:
        text = self.text if len(self.text) < 60 else self.text[:57] + "..."
        return f"<Run {self.id[:8]} {self.model_name} finish={self.finish_reason} text={text!r}>"


@dataclass(frozen=True)
class Column:
    """One column of the runs table: its SQL type, and how a value is written to it and read back."""

    name: str
    sql: str  # TEXT, INTEGER or REAL
    kind: str = "plain"  # plain, bool (0/1), json (lists and dicts as JSON text) or time (ISO text)
    heavy: bool = False  # large, and needed for one run at a time: left out of tables unless asked for
    empty: Any = None  # what a missing JSON value reads as in a table

    def encode(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "json":
            return json.dumps(list(value) if isinstance(value, tuple) else value)
        if self.kind == "bool":
            return int(bool(value))
        if self.kind == "time":
            return value.isoformat()
        return value

    def decode(self, value: Any) -> Any:
        if value is None:
            return [] if self.empty == [] else None
        if self.kind == "json":
            return json.loads(value)
        if self.kind == "bool":
            return bool(value)
        if self.kind == "time":
            return datetime.fromisoformat(value)
        return value


_SQL = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}
_HEAVY = {"token_logprobs", "messages", "grammar", "item", "tools", "prompt_sent"}


def _column(name: str, hint: Any, listed_by_default: bool) -> Column:
    """The column for a field of ``Run`` or ``GenerationParams``, from its type (and default)."""
    if isinstance(hint, types.UnionType):  # X | None
        hint = next(t for t in hint.__args__ if t is not type(None))
    origin = getattr(hint, "__origin__", hint)
    heavy = name in _HEAVY
    if origin in (list, dict, tuple):
        return Column(name, "TEXT", "json", heavy, [] if listed_by_default else None)
    if hint is datetime:
        return Column(name, "TEXT", "time", heavy)
    return Column(name, _SQL[hint], "bool" if hint is bool else "plain", heavy)


def _columns() -> tuple[Column, ...]:
    run_hints = get_type_hints(Run)
    param_hints = get_type_hints(GenerationParams)
    columns: list[Column] = []
    for f in fields(Run):
        if f.name == "params":
            columns += [_column(n, param_hints[n], PARAM_SPECS[n].default == ()) for n in PARAM_NAMES]
        elif f.name not in ("metrics", "environment_facts"):
            columns.append(_column(f.name, run_hints[f.name], f.default_factory is list))
    return tuple(columns)


# The runs table, once: the store's schema is checked against it, rows are written and read
# through it, and the runs DataFrame takes its types from it.
COLUMNS = _columns()
