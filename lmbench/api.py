"""The local HTTP API's logic, free of any web framework: JSON bodies in, JSON-able dicts out.

Routes (under ``/`` for ``lmbench serve``, under ``/lmbench/`` inside Jupyter):

- ``POST /api/generate``: ``{"prompt", "max_tokens", "temperature", "top_p", ...}`` ->
  ``{"text", "run_id", "usage", "timings", ...}``
- ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``: OpenAI-compatible
  (``"stream": true`` answers with server-sent events)
- ``GET /api/runs?experiment=&limit=``: recorded runs
- ``GET /api/params``: the generation parameters (names, types, defaults, ranges, descriptions)
- ``GET /api/status``: the default model and the server's limits

Every generation is recorded with ``source="api"``. Requests may only name models the model
manager lists (never a filesystem path), ``max_tokens`` is capped, and bad input is a 400 with
an OpenAI-style error body.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, models
from .chat import chat
from .engine import load_engine
from .errors import LmbenchError, ModelLoadError, ModelNotFoundError, ParameterError
from .generation import generate
from .params import GenerationParams, param_specs
from .run import Run
from .store import Store, get_store

MODEL_SCAN_INTERVAL_S = 5.0
# Request fields that are not generation parameters.
_COMMON = {"model", "stream", "experiment", "tags"}
# OpenAI fields accepted and ignored (they do not change the output).
_IGNORED = {"user", "stream_options", "n"}


@dataclass
class Settings:
    """What the server operator decides; requests cannot change these."""

    model: str | None = None
    n_ctx: int = 2048
    max_tokens_cap: int = 4096
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    store: str | os.PathLike[str] | Store | None = None


class ApiError(Exception):
    """An error answered to the client: HTTP status, message, OpenAI-style type and parameter."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


OnToken = Callable[[str], Any]


class Service:
    """One API instance: its settings, its default model, and the request handlers."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.default_path = models.resolve(self.settings.model)
        self.default_id = models.model_id(self.default_path)
        self.started = int(time.time())
        self._available: tuple[float, dict[str, Path]] = (0.0, {})

    # Models -----------------------------------------------------------------------------------

    def available_models(self, *, rescan: bool = True) -> dict[str, Path]:
        """Model ids a request may name: the server's model and everything the model manager lists.

        ``rescan`` looks at the model folders again (at most every few seconds); requests naming a
        model seen before pay no scan.
        """
        scanned, cached = self._available
        if cached and (not rescan or time.monotonic() - scanned < MODEL_SCAN_INTERVAL_S):
            return cached
        available = {self.default_id: self.default_path, self.default_path.name: self.default_path}
        if self.settings.model and os.sep not in self.settings.model:
            available[self.settings.model] = self.default_path
        listed = models.list()
        for row in listed.itertuples():
            if not isinstance(getattr(row, "error", None), str):
                available.setdefault(str(row.alias), Path(row.path))
                available.setdefault(Path(row.path).name, Path(row.path))
        self._available = (time.monotonic(), available)
        return available

    def model_path(self, name: Any) -> Path:
        if name is None or name == "":
            return self.default_path
        if not isinstance(name, str):
            raise ApiError(400, "model must be a string", param="model")
        available = self.available_models(rescan=False)
        if name not in available:
            available = self.available_models()
        if name not in available:
            raise ApiError(
                404 if os.sep not in name else 400,
                f"unknown model {name!r}; available models: {', '.join(sorted(self._ids()))}",
                kind="invalid_request_error",
                param="model",
            )
        return available[name]

    def _ids(self) -> list[str]:
        """One id per model: its alias (the first name it was listed under)."""
        by_path: dict[Path, str] = {}
        for name, path in self.available_models().items():
            if not name.endswith(".gguf"):
                by_path.setdefault(path.resolve(), name)
        return [*by_path.values()]

    def list_models(self) -> dict[str, Any]:
        """``GET /v1/models``: each model once, by its alias."""
        data = [{"id": i, "object": "model", "created": self.started, "owned_by": "lmbench"} for i in self._ids()]
        return {"object": "list", "data": data}

    @staticmethod
    def params() -> dict[str, Any]:
        """``GET /api/params``: every generation parameter (the same definition the UI and CLI use)."""
        return {
            "parameters": [
                {
                    "name": s.name,
                    "type": s.type.__name__,
                    "default": list(s.default) if isinstance(s.default, tuple) else s.default,
                    "minimum": s.minimum,
                    "maximum": s.maximum,
                    "allowed": s.range_text(),
                    "description": s.description,
                }
                for s in param_specs()
            ],
            "json_schema": GenerationParams.model_json_schema(),
        }

    def status(self) -> dict[str, Any]:
        """``GET /api/status``."""
        return {
            "status": "ok",
            "lmbench_version": __version__,
            "model": self.default_id,
            "n_ctx": self.settings.n_ctx,
            "max_tokens_cap": self.settings.max_tokens_cap,
            "max_body_bytes": self.settings.max_body_bytes,
        }

    # Parameters ---------------------------------------------------------------------------------

    def _params(self, body: dict[str, Any], fields: set[str]) -> dict[str, Any]:
        """The generation parameters of a request; other unknown fields are a 400."""
        params = {k: v for k, v in body.items() if k not in _COMMON | _IGNORED | fields}
        if body.get("n", 1) not in (1, None):
            raise ApiError(400, "only n=1 is supported", param="n")
        params = {k: v for k, v in params.items() if v is not None}
        if "max_tokens" in params:
            if isinstance(params["max_tokens"], bool) or not isinstance(params["max_tokens"], int):
                raise ApiError(400, "max_tokens must be an integer", param="max_tokens")
            params["max_tokens"] = min(params["max_tokens"], self.settings.max_tokens_cap)
        return params

    def _options(self, body: dict[str, Any]) -> dict[str, Any]:
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ApiError(400, "tags must be a list of strings", param="tags")
        experiment = body.get("experiment")
        if experiment is not None and not isinstance(experiment, str):
            raise ApiError(400, "experiment must be a string", param="experiment")
        return {"experiment": experiment, "tags": tags, "source": "api", "store": self.settings.store}

    def _engine(self, body: dict[str, Any]) -> Any:
        path = self.model_path(body.get("model"))
        try:
            return load_engine(path, n_ctx=self.settings.n_ctx)[0]
        except (ModelLoadError, ModelNotFoundError) as exc:
            raise ApiError(500, str(exc), kind="server_error", param="model") from None

    def _run(self, fn: Callable[[], Run]) -> Run:
        try:
            return fn()
        except ParameterError as exc:
            raise ApiError(400, str(exc), param=exc.name) from None
        except LmbenchError as exc:
            raise ApiError(500, str(exc), kind="server_error") from None

    # Handlers --------------------------------------------------------------------------------------

    def generate(self, body: dict[str, Any], on_token: OnToken | None = None, cancel: Any = None) -> dict[str, Any]:
        """``POST /api/generate``: the LM Studio guides' request and a plain JSON answer."""
        prompt = _text(body, "prompt")
        params = self._params(body, {"prompt"})
        engine = self._engine(body)
        run = self._run(
            lambda: generate(prompt, model=engine, on_token=on_token, cancel=cancel, **self._options(body), **params)
        )
        return {
            "text": run.text,
            "run_id": run.id,
            "model": models.model_id(engine.path),
            "finish_reason": run.finish_reason,
            "seed": run.seed,
            "usage": _usage(run),
            "timings": {k: _finite(getattr(run, k)) for k in ("load_s", "ttft_s", "total_s", "tokens_per_s")},
        }

    def completion(self, body: dict[str, Any], on_token: OnToken | None = None, cancel: Any = None) -> dict[str, Any]:
        """``POST /v1/completions``."""
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        prompt = _text({"prompt": prompt}, "prompt")
        params = self._params(body, {"prompt", "echo", "logit_bias", "best_of", "suffix"})
        for unsupported in ("logit_bias", "suffix"):
            if body.get(unsupported):
                raise ApiError(400, f"{unsupported} is not supported", param=unsupported)
        engine = self._engine(body)
        run = self._run(
            lambda: generate(prompt, model=engine, on_token=on_token, cancel=cancel, **self._options(body), **params)
        )
        text = (prompt if body.get("echo") else "") + run.text
        choice = {"text": text, "index": 0, "logprobs": _completion_logprobs(run), "finish_reason": _finish(run)}
        head = self._head(run, "cmpl", "text_completion", models.model_id(engine.path))
        return {**head, "choices": [choice], "usage": _usage(run)}

    def chat_completion(
        self, body: dict[str, Any], on_token: OnToken | None = None, cancel: Any = None
    ) -> dict[str, Any]:
        """``POST /v1/chat/completions``."""
        messages = body.get("messages")
        wants_logprobs = body.get("logprobs")
        if wants_logprobs is not None and not isinstance(wants_logprobs, bool):
            raise ApiError(400, "logprobs must be true or false for chat completions", param="logprobs")
        params = self._params(body, {"messages", "logprobs", "top_logprobs"})
        if wants_logprobs:
            params["logprobs"] = body.get("top_logprobs") or 0
        engine = self._engine(body)
        run = self._run(
            lambda: chat(messages, model=engine, on_token=on_token, cancel=cancel, **self._options(body), **params)
        )
        message = {"role": "assistant", "content": run.text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(run)}
        head = self._head(run, "chatcmpl", "chat.completion", models.model_id(engine.path))
        return {**head, "choices": [choice], "usage": _usage(run)}

    def runs(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /api/runs?experiment=&limit=``: the newest runs, oldest first."""
        try:
            limit = int(query.get("limit") or 100)
        except ValueError:
            raise ApiError(400, f"limit must be an integer, not {query.get('limit')!r}", param="limit") from None
        if limit < 1:
            raise ApiError(400, "limit must be at least 1", param="limit")
        frame = get_store(self.settings.store).runs(query.get("experiment") or None, last=limit)
        return {"runs": json.loads(frame.to_json(orient="records", date_format="iso"))}

    @staticmethod
    def _head(run: Run, prefix: str, kind: str, model: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{run.id}", "object": kind, "created": int(run.created_at.timestamp()), "model": model}


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string", param=name)
    return value


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _usage(run: Run) -> dict[str, int]:
    return {
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "total_tokens": run.prompt_tokens + run.completion_tokens,
    }


def _finish(run: Run) -> str:
    """OpenAI's finish reasons: a cancelled run (client gone) counts as stopped."""
    return "length" if run.finish_reason == "length" else "stop"


def _completion_logprobs(run: Run) -> dict[str, Any] | None:
    if run.token_logprobs is None:
        return None
    entries = run.token_logprobs
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{alt["token"]: alt["logprob"] for alt in e.get("top", [])} for e in entries],
    }


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    """A request body as a JSON object, or the ``ApiError`` that says what is wrong with it."""
    if len(raw) > limit:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limit}")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def stream_chunks(kind: str, model: str, created: int, run_id: str) -> Callable[[str | None, str | None], dict]:
    """A maker of OpenAI streaming chunks for one response: ``make(text, finish_reason)``."""
    first = [True]

    def make(text: str | None, finish: str | None) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if first[0]:
                delta = {"role": "assistant", **delta}
            first[0] = False
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [choice]}  # fmt: skip
        choice = {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
        return {"id": f"cmpl-{run_id}", "object": "text_completion", "created": created, "model": model,
                "choices": [choice]}  # fmt: skip

    return make
