"""``Run``: the record of one generation, as kept in the store and shown in a notebook."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from .params import PARAM_NAMES, PARAM_SPECS, GenerationParams

FINISH_REASONS = ("stop", "length", "cancelled", "error")


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None, all the way down (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


# Fields kept as JSON text in the store.
JSON_FIELDS = ("tags", "token_logprobs", "messages", "sweep_coords", "item")


@dataclass
class Run:
    """One recorded generation: prompt, output, every parameter, the seed used, timings and metrics.

    Timings: ``load_s`` is the model load this call caused (0 when the model was already
    loaded), ``ttft_s`` the time from start to the first generated token (prompt evaluation
    included), ``total_s`` the whole generation, and ``tokens_per_s`` the decode speed after the
    first token, ``(completion_tokens - 1) / (total_s - ttft_s)``. The clock starts when the run
    joins the batch (see ``lmbench._scheduler``); ``batch_size`` is the most runs that shared a
    decode with it and ``prompt_cached_tokens`` how many prompt tokens came from the KV cache.
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
    experiment: str | None = None
    tags: list[str] = field(default_factory=list)
    source: str = "python"
    error: str | None = None
    lmbench_version: str = ""
    llama_cpp_version: str = ""
    token_logprobs: list[dict[str, Any]] | None = None
    messages: list[dict[str, Any]] | None = None
    chat_format: str | None = None
    stop_word: str | None = None
    item: dict[str, Any] | None = None  # the data-set row a sweep filled its template with (id, vars, reference)
    sweep_id: str | None = None
    sweep_coords: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The seed actually used (drawn at random when none was given)."""
        assert self.params.seed is not None
        return self.params.seed

    def __getattr__(self, name: str) -> Any:
        if name in PARAM_NAMES:
            return getattr(self.params, name)
        raise AttributeError(f"'Run' object has no attribute {name!r}")

    def to_record(self) -> dict[str, Any]:
        """A flat dict: one key per column of the store."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: JSON-encoded below anyway
        record.update(record.pop("params").model_dump())
        record["stop"] = json.dumps(list(self.params.stop))
        if self.params.json_schema is not None:
            record["json_schema"] = json.dumps(self.params.json_schema)
        record["created_at"] = self.created_at.isoformat()
        for key in JSON_FIELDS:
            record[key] = None if record[key] is None else json.dumps(record[key])
        record.pop("metrics")
        return record

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values (lists and dicts rather than JSON text, NaN as None), metrics included."""
        record = self.to_record()
        for key in (*JSON_FIELDS, "stop", "json_schema"):
            if isinstance(record.get(key), str):
                record[key] = json.loads(record[key])
        record["metrics"] = dict(self.metrics)
        return _json_ready(record)

    @classmethod
    def from_record(cls, record: dict[str, Any], metrics: dict[str, float] | None = None) -> Run:
        """Rebuild a run from a store row."""
        data = dict(record)
        params = {name: data.pop(name, None) for name in PARAM_NAMES}
        # A column added by a later migration is NULL in older rows: those parameters take their default.
        params = {k: v for k, v in params.items() if v is not None or PARAM_SPECS[k].default is None}
        params.update({k: bool(v) for k, v in params.items() if PARAM_SPECS[k].type is bool})  # SQLite's 0/1
        params["stop"] = json.loads(params.get("stop") or "[]")
        if params.get("json_schema") is not None:
            params["json_schema"] = json.loads(params["json_schema"])
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        for key in JSON_FIELDS:
            data[key] = None if data.get(key) is None else json.loads(data[key])
        data["tags"] = data["tags"] or []
        known = cls.__dataclass_fields__
        return cls(
            params=GenerationParams(**params),
            metrics=dict(metrics or {}),
            **{k: v for k, v in data.items() if k in known},
        )

    def _repr_html_(self) -> str:
        stats = [
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens",
            f"TTFT {self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "",
            f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s and math.isfinite(self.tokens_per_s) else "",
            f"finish: {self.finish_reason}",
            f"seed {self.seed}",
        ]
        params = ", ".join(
            f"{k}={getattr(self.params, k)!r}"
            for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")
        )
        error = f"<div style='color:#b00020'>{html.escape(self.error)}</div>" if self.error else ""
        return (
            "<div class='lmbench-run' style='font-family:sans-serif;border:1px solid #ddd;"
            "border-radius:6px;padding:8px 12px;max-width:60em'>"
            f"<div style='color:#666;font-size:85%'>{html.escape(self.model_name)} · {params}</div>"
            f"<div style='white-space:pre-wrap;margin:6px 0'><span style='color:#888'>"
            f"{html.escape(self.prompt)}</span>{html.escape(self.text)}</div>{error}"
            f"<div style='color:#666;font-size:85%'>{' · '.join(s for s in stats if s)} · run {self.id[:8]}</div>"
            "</div>"
        )

    def __repr__(self) -> str:
        text = self.text if len(self.text) < 60 else self.text[:57] + "..."
        return f"<Run {self.id[:8]} {self.model_name} finish={self.finish_reason} text={text!r}>"
