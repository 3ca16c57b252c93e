"""The local HTTP API's logic, free of any web framework: JSON bodies in, JSON-able dicts (or events) out.

One server, three dialects, every generation recorded with ``source="api"``:

- lmbench's own (the LM Studio guides' ``POST /api/generate``, plus runs, parameters, status);
- OpenAI's (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, also without ``/v1``);
- llama.cpp's ``llama-server`` native routes (``/completion``, ``/tokenize``, ``/detokenize``,
  ``/health``, ``/props``).

``ROUTES`` is the one list of routes: the standalone server, the Jupyter extension and the
README's table read it. ``ERRORS`` maps lmbench's exceptions to HTTP statuses and OpenAI error
types. A request may only name models the model manager lists (never a path); a name it does not
know is answered by the server's model (the name echoed), unless ``strict_models`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF

from .. import models
from .._version import __version__
from ..chat import ChatPrompt, check_messages, render
from ..chat import chat as chat_reply
from ..engine._engine import Engine, load_engine, loaded
from ..errors import (
    ContextOverflowError,
    EngineClosedError,
    LmbenchError,
    ModelLoadError,
    ModelNotFoundError,
    ParameterError,
)
from ..generation import Cancel, Job, Recorder, execute_many, random_seed
from ..generation import generate as generate_run
from ..params import MAX_SEED, GenerationParams, param_specs, validate_params
from ..run import Labels, Run
from ..store._store import Store, get_store

MODEL_SCAN_INTERVAL_S = 5.0
SYSTEM_FINGERPRINT = f"fp_lmbench_{__version__}_llama_cpp_{llama_cpp.__version__}"
# The most choices one request may ask for (n / n_cmpl).
MAX_CHOICES = 16
# Request fields that label runs or choose the model rather than set a generation parameter.
_COMMON = {"model", "stream", "experiment", "tags"}
# OpenAI fields that do not change the output: accepted and ignored.
_IGNORED_OPENAI = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "stream_options", "n"}
# llama-server fields lmbench accepts and ignores (its own prompt cache and scheduling do their job).
_IGNORED_NATIVE = {
    "cache_prompt",
    "id_slot",
    "n_keep",
    "samplers",
    "return_progress",
    "timings_per_token",
    "return_tokens",
    "repeat_last_n",
    "min_keep",
    "n_indent",
    "t_max_predict_ms",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "xtc_threshold",
    "mirostat_tau",
    "mirostat_eta",
    "dynatemp_exponent",
    "post_sampling_probs",
    "response_fields",
    "n_cache_reuse",
    "sse_ping_interval",
}
# llama-server samplers lmbench does not have: accepted only at their neutral values.
_NEUTRAL_NATIVE = {
    "typical_p": 1.0,
    "mirostat": 0,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
    "dynatemp_range": 0.0,
    "logit_bias": [],
    "lora": [],
}


@dataclass
class Settings:
    """What the server operator decides; requests cannot change these."""

    model: str | None = None
    n_ctx: int = 2048
    max_tokens_cap: int = 4096
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    store: str | os.PathLike[str] | Store | None = None
    strict_models: bool = False  # an unknown model name is a 404 instead of the server's model
    parallel: int = 4  # requests decoded together per model (LM Studio's "Max Concurrent Predictions")
    max_queue: int = 256  # requests waiting per model beyond which the answer is 503 with Retry-After
    allow_hosts: tuple[str, ...] = ()  # Host names served besides localhost and IP addresses
    cors_origins: tuple[str, ...] = ()  # browser origins allowed besides pages served from this machine


class ApiError(Exception):
    """An error answered to the client: HTTP status, message, OpenAI-style type, parameter and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.retry_after = retry_after  # seconds, sent as the Retry-After header

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# lmbench's exceptions as (status, OpenAI error type, code), most specific first.
ERRORS: tuple[tuple[type[LmbenchError], int, str, str | None], ...] = (
    (ContextOverflowError, 400, "invalid_request_error", "context_length_exceeded"),
    (ParameterError, 400, "invalid_request_error", None),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (ModelLoadError, 500, "server_error", "model_load_failed"),
    (EngineClosedError, 503, "server_error", None),
    (LmbenchError, 500, "server_error", None),
)


def api_error(exc: LmbenchError) -> ApiError:
    """The answer to a request that failed with ``exc``."""
    status, kind, code = next((s, k, c) for cls, s, k, c in ERRORS if isinstance(exc, cls))
    return ApiError(status, str(exc), kind=kind, param=getattr(exc, "name", None), code=code)


@dataclass(frozen=True)
class Route:
    """One HTTP route: where it is, which ``Service`` method answers it, and what it does."""

    method: str
    paths: tuple[str, ...]  # without the leading slash; each transport puts its prefix before them
    handler: str
    dialect: str
    summary: str
    streams: bool = False  # answers "stream": true with server-sent events
    done_marker: bool = False  # a stream ends with "data: [DONE]"
    records: bool = False  # each answer is recorded as runs
    public: bool = False  # answered without the API key


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        ("api/generate",),
        "generate",
        "lmbench",
        "the LM Studio guides' request: prompt and parameters in, text, run id, usage and timings out",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route("GET", ("api/runs",), "runs", "lmbench", "recorded runs, newest last (?experiment=&limit=)"),
    Route("GET", ("api/params",), "params", "lmbench", "every generation parameter: type, default, range, description"),
    Route("GET", ("api/status",), "status", "lmbench", "the server's model, limits and version"),
    Route("GET", ("v1/models", "models"), "list_models", "openai", "the models a request may name, each once"),
    Route(
        "POST",
        ("v1/completions", "completions"),
        "completion",
        "openai",
        "text completion (n choices, logprobs, echo, stream with usage)",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route(
        "POST",
        ("v1/chat/completions", "chat/completions"),
        "chat_completion",
        "openai",
        "chat through the model's template (n choices, logprobs, stream with usage)",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route(
        "POST",
        ("completion",),
        "native_completion",
        "llama.cpp",
        "llama-server's completion (n_predict, n_probs, timings, stop_type, stream)",
        streams=True,
        records=True,
    ),
    Route("POST", ("tokenize",), "tokenize", "llama.cpp", "text to token ids (add_special, parse_special, pieces)"),
    Route("POST", ("detokenize",), "detokenize", "llama.cpp", "token ids to text"),
    Route("GET", ("health", "v1/health"), "health", "llama.cpp", "ready or not (no API key needed)", public=True),
    Route("GET", ("props",), "props", "llama.cpp", "default settings, context, chat template (no file paths)"),
)


def route_pattern() -> str:
    """A regex group matching every route path (longest first), with an optional trailing slash."""
    paths = sorted((p for r in ROUTES for p in r.paths), key=len, reverse=True)
    return "(" + "|".join(p.replace("/", r"\/") for p in paths) + r")/?"


def routes_table() -> str:
    """Every route as a Markdown table (the README's copy is checked against it)."""
    rows = ["| route | dialect | what it does | records runs |", "| --- | --- | --- | --- |"]
    for r in ROUTES:
        where = ", ".join(f"`{r.method} /{p}`" for p in r.paths)
        rows.append(f"| {where} | {r.dialect} | {r.summary} | {'yes' if r.records else 'no'} |")
    return "\n".join(rows)


def find_route(path: str) -> dict[str, Route]:
    """The routes at ``path`` by method (empty when there are none)."""
    return {r.method: r for r in ROUTES if path in r.paths}


Emit = Callable[[dict[str, Any]], Any]
OnPiece = Callable[[int, str | None], Any]


@dataclass
class _Request:
    """A generating request, checked before anything is loaded."""

    params: dict[str, Any]
    n: int
    name: str  # the model name echoed back
    path: Path
    labels: dict[str, Any] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)  # the runs' ids, chosen before they start

    def __post_init__(self) -> None:
        self.run_ids = self.run_ids or [uuid.uuid4().hex for _ in range(self.n)]


class Service:
    """One API instance: its settings, its model, and a handler per route."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        for name in ("parallel", "max_queue"):
            value = getattr(self.settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
                raise ParameterError(f"{name} must be a whole number from 1 to 4096, not {value!r}", name=name)
        self.default_path = models.resolve(self.settings.model)
        self.default_id = models.model_id(self.default_path)
        self.started = int(time.time())
        self._available: tuple[float, dict[str, Path]] = (0.0, {})

    def call(
        self, method: str, handler: str, payload: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None
    ) -> Any:
        """Answer one route in this process: GET handlers take the query, POST handlers the body."""
        answer = getattr(self, handler)
        return answer(payload) if method == "GET" else answer(payload, emit, cancel)

    # Models -----------------------------------------------------------------------------------

    def available_models(self, *, rescan: bool = True) -> dict[str, Path]:
        """Model names a request may use: the server's model and everything the model manager lists.

        ``rescan`` looks at the model folders again (at most every few seconds); requests naming a
        model seen before pay no scan.
        """
        scanned, cached = self._available
        if cached and (not rescan or time.monotonic() - scanned < MODEL_SCAN_INTERVAL_S):
            return cached
        available = {self.default_id: self.default_path, self.default_path.name: self.default_path}
        if self.settings.model and os.sep not in self.settings.model:
            available[self.settings.model] = self.default_path
        for row in models.list().itertuples():
            if not isinstance(getattr(row, "error", None), str):
                path = Path(str(row.path))
                available.setdefault(str(row.alias), path)
                available.setdefault(path.name, path)
        self._available = (time.monotonic(), available)
        return available

    def _ids(self) -> list[str]:
        """One id per model: its alias (the first name it was listed under)."""
        by_path: dict[Path, str] = {}
        for name, path in self.available_models().items():
            if not name.endswith(".gguf"):
                by_path.setdefault(path.resolve(), name)
        return [*by_path.values()]

    def model_path(self, name: Any) -> tuple[str, Path]:
        """The name to echo and the model file for a request's ``model`` field."""
        if name is None or name == "":
            return self.default_id, self.default_path
        if not isinstance(name, str):
            raise ApiError(400, "model must be a string", param="model")
        if "/" in name or "\\" in name or name.startswith("."):
            raise ApiError(400, f"model must be a model name, not a path: {name!r}", param="model")
        available = self.available_models(rescan=False)
        if name not in available:
            available = self.available_models()
        if name in available:
            return name, available[name]
        if self.settings.strict_models:
            raise ApiError(
                404,
                f"unknown model {name!r}; available models: {', '.join(sorted(self._ids()))}",
                param="model",
                code="model_not_found",
            )
        return name, self.default_path

    def list_models(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /v1/models``: each model once, by its alias."""
        data = [{"id": i, "object": "model", "created": self.started, "owned_by": "lmbench"} for i in self._ids()]
        return {"object": "list", "data": data}

    # Information ------------------------------------------------------------------------------

    @staticmethod
    def params(query: dict[str, str]) -> dict[str, Any]:
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

    def status(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /api/status``."""
        return {
            "status": "ok",
            "lmbench_version": __version__,
            "model": self.default_id,
            "n_ctx": self.settings.n_ctx,
            "max_tokens_cap": self.settings.max_tokens_cap,
            "max_body_bytes": self.settings.max_body_bytes,
            "strict_models": self.settings.strict_models,
            "parallel": self.settings.parallel,
            "max_queue": self.settings.max_queue,
            **self.engines({}),
        }

    @staticmethod
    def health(query: dict[str, str]) -> dict[str, Any]:
        """``GET /health``: models load on first use, so the server is ready as soon as it answers."""
        return {"status": "ok"}

    def props(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /props``: llama-server's properties, without the model's file path."""
        defaults = validate_params()
        facts = models.metadata(self.default_path)
        return {
            "default_generation_settings": {
                "n_ctx": self.settings.n_ctx,
                "params": {**_native_settings(defaults), "n_predict": -1, "seed": -1},
            },
            "total_slots": 1,
            "model_alias": self.default_id,
            "chat_template": facts.get("chat_template") or "",
            "modalities": {"vision": False, "audio": False},
            "build_info": f"lmbench {__version__} (llama-cpp-python {llama_cpp.__version__})",
        }

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

    # Checking requests --------------------------------------------------------------------------

    def _request(self, body: dict[str, Any], params: dict[str, Any], n: Any = 1) -> _Request:
        """Generation parameters (validated), the number of choices, the model and the run labels."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
            raise ApiError(400, f"n must be an integer from 1 to {MAX_CHOICES}, not {n!r}", param="n")
        params = {k: v for k, v in params.items() if v is not None}
        if "max_tokens" in params:
            if isinstance(params["max_tokens"], bool) or not isinstance(params["max_tokens"], int):
                raise ApiError(400, "max_tokens must be an integer", param="max_tokens")
            params["max_tokens"] = min(params["max_tokens"], self.settings.max_tokens_cap)
        try:
            validate_params(params)  # before any model is loaded
        except ParameterError as exc:
            raise api_error(exc) from None
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ApiError(400, "tags must be a list of strings", param="tags")
        experiment = body.get("experiment")
        if experiment is not None and not isinstance(experiment, str):
            raise ApiError(400, "experiment must be a string", param="experiment")
        name, path = self.model_path(body.get("model"))
        labels = {"experiment": experiment, "tags": tags, "source": "api", "store": self.settings.store}
        return _Request(params, n, name, path, labels)

    @staticmethod
    def _openai_params(body: dict[str, Any], own: set[str]) -> dict[str, Any]:
        """The generation parameters of an OpenAI request (``max_completion_tokens`` is ``max_tokens``)."""
        params = {k: v for k, v in body.items() if k not in _COMMON | _IGNORED_OPENAI | own}
        if "max_completion_tokens" in params:
            params["max_tokens"] = params.pop("max_completion_tokens")
        for unsupported in ("logit_bias", "suffix", "tools", "functions"):
            if params.pop(unsupported, None):
                raise ApiError(400, f"{unsupported} is not supported", param=unsupported)
        response_format = params.pop("response_format", None)
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if response_format is None or kind == "text":
            return params
        if kind == "json_object":
            params["grammar"] = JSON_GBNF
        elif kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
            params["json_schema"] = response_format["json_schema"].get("schema") or {}
        else:
            raise ApiError(
                400,
                "response_format must be {'type': 'text' | 'json_object' | 'json_schema', "
                "'json_schema': {'name': ..., 'schema': {...}}}",
                param="response_format",
            )
        return params

    def _engine(self, request: _Request) -> Engine:
        try:
            engine = load_engine(request.path, n_ctx=self.settings.n_ctx)[0]
        except LmbenchError as exc:
            raise api_error(exc) from None
        engine.parallel = self.settings.parallel
        return engine

    def engines(self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
        """The loaded models' schedulers: slots, busy, queued, KV cache size (for ``/api/status``)."""
        return {"engines": [{"model": e.name, **e.scheduler.status()} for e in loaded()]}

    # Generating --------------------------------------------------------------------------------

    def _choices(
        self,
        request: _Request,
        *,
        prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
        on_piece: OnPiece | None = None,
        cancel: Cancel = None,
    ) -> tuple[Engine, list[Run]]:
        """``request.n`` recorded runs of a prompt (or a conversation): one run alone, several decoded together.

        The runs are recorded under ``request.run_ids`` (known before the first streamed chunk).
        """
        engine = self._engine(request)
        if engine.scheduler.queued + request.n > self.settings.max_queue:
            raise ApiError(
                503,
                f"the server is busy: {engine.scheduler.queued} requests are waiting for {engine.name}; retry shortly",
                kind="server_error",
                retry_after=1,
            )
        try:
            if request.n == 1:
                stream = None if on_piece is None else functools.partial(on_piece, 0)
                options = {
                    "model": engine,
                    "on_token": stream,
                    "cancel": cancel,
                    "run_id": request.run_ids[0],
                    **request.labels,
                    **request.params,
                }
                if messages is not None:
                    return engine, [chat_reply(messages, **options)]
                assert prompt is not None
                return engine, [generate_run(prompt, **options)]
            return engine, self._batched(engine, request, prompt, messages, on_piece, cancel)
        except LmbenchError as exc:
            raise api_error(exc) from None

    @staticmethod
    def _batched(
        engine: Engine,
        request: _Request,
        prompt: str | None,
        messages: list[dict[str, str]] | None,
        on_piece: OnPiece | None,
        cancel: Cancel,
    ) -> list[Run]:
        """n choices of one prompt in one batch (the prompt evaluated once), each with its own seed."""
        params = validate_params(request.params)
        rendered: ChatPrompt | None = None
        labels = Labels.checked(request.labels["experiment"], request.labels["tags"], "api")
        if messages is not None:
            turns = check_messages(messages)
            rendered = render(engine, turns)
            params = rendered.with_stops(params)
            labels = dataclasses.replace(labels, messages=turns, chat_format=rendered.chat_format)
        first = params.seed if params.seed is not None else random_seed()
        seeds = [(first + i) % (MAX_SEED + 1) for i in range(request.n)]
        text = rendered.prompt if rendered else prompt
        assert text is not None
        options = rendered.tokenize_options if rendered else {}
        jobs = [
            Job(
                text,
                params.model_copy(update={"seed": seed}),
                dataclasses.replace(labels, run_id=request.run_ids[i]),
                None if on_piece is None else functools.partial(on_piece, i),
                **options,
            )
            for i, seed in enumerate(seeds)
        ]
        runs: dict[int, Run] = {}
        recorder = Recorder.to(request.labels["store"])

        def finished(run: Run) -> None:
            runs[seeds.index(run.seed)] = recorder(run)

        slots = request.n if request.n > engine.parallel else None  # n choices past --parallel still decode together
        _, interruption = execute_many(engine, jobs, on_finished=finished, cancel=cancel, slots=slots)
        if interruption is not None:
            raise interruption
        return [runs[i] for i in sorted(runs)]

    # Handlers: lmbench ----------------------------------------------------------------------------

    def generate(self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
        """``POST /api/generate``: the LM Studio guides' request and a plain JSON answer."""
        prompt = _text(body, "prompt")
        request = self._request(body, {k: v for k, v in body.items() if k not in _COMMON | {"prompt"}})
        on_piece: OnPiece | None = None
        if emit is not None:

            def on_piece(i: int, text: str | None) -> None:
                emit({"text": text or ""})

        _, (run,) = self._choices(request, prompt=prompt, on_piece=on_piece, cancel=cancel)
        answer = {
            "text": run.text,
            "run_id": run.id,
            "model": request.name,
            "finish_reason": run.finish_reason,
            "seed": run.seed,
            "usage": _usage([run]),
            "timings": {k: _finite(getattr(run, k)) for k in ("load_s", "ttft_s", "total_s", "tokens_per_s")},
        }
        return {**answer, "done": True} if emit is not None else answer

    # Handlers: OpenAI -------------------------------------------------------------------------------

    def completion(
        self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None
    ) -> dict[str, Any] | None:
        """``POST /v1/completions``."""
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        prompt = _text({"prompt": prompt}, "prompt")
        params = self._openai_params(body, {"prompt", "echo", "best_of"})
        request = self._request(body, params, body.get("n", 1))
        head = {"object": "text_completion", "created": int(time.time()), "model": request.name}
        stream_id = f"cmpl-{request.run_ids[0]}"
        on_piece = None
        if emit is not None:

            def on_piece(i: int, text: str | None) -> None:
                emit({"id": stream_id, **head, "choices": [_text_choice(i, text or "", None, None)]})

        _, runs = self._choices(request, prompt=prompt, on_piece=on_piece, cancel=cancel)
        if emit is not None:
            for i, run in enumerate(runs):
                emit({"id": stream_id, **head, "choices": [_text_choice(i, "", None, _finish(run))]})
            return _usage_chunk(body, {"id": stream_id, **head}, runs)
        echo = prompt if body.get("echo") else ""
        choices = [
            _text_choice(i, echo + r.text, _completion_logprobs(r, len(echo)), _finish(r)) for i, r in enumerate(runs)
        ]
        return {
            "id": f"cmpl-{runs[0].id}",
            **head,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            "usage": _usage(runs),
        }

    def chat_completion(
        self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None
    ) -> dict[str, Any] | None:
        """``POST /v1/chat/completions``."""
        messages = body.get("messages")
        try:
            check_messages(messages)  # type: ignore[arg-type]
        except ParameterError as exc:
            raise api_error(exc) from None
        wants_logprobs = body.get("logprobs")
        if wants_logprobs is not None and not isinstance(wants_logprobs, bool):
            raise ApiError(400, "logprobs must be true or false for chat completions", param="logprobs")
        params = self._openai_params(body, {"messages", "logprobs", "top_logprobs"})
        if wants_logprobs:
            params["logprobs"] = body.get("top_logprobs") or 0
        request = self._request(body, params, body.get("n", 1))
        head = {
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.name,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        stream_id = f"chatcmpl-{request.run_ids[0]}"
        on_piece = None
        begun: set[int] = set()
        if emit is not None:

            def on_piece(i: int, text: str | None) -> None:
                if i not in begun:  # a choice's first chunk carries the role and empty content, as OpenAI sends it
                    begun.add(i)
                    emit({"id": stream_id, **head, "choices": [_delta(i, {"role": "assistant", "content": ""}, None)]})
                if text:
                    emit({"id": stream_id, **head, "choices": [_delta(i, {"content": text}, None)]})

        engine, runs = self._choices(request, messages=messages, on_piece=on_piece, cancel=cancel)
        if on_piece is not None and emit is not None:
            for i, run in enumerate(runs):
                on_piece(i, None)
                emit({"id": stream_id, **head, "choices": [_delta(i, {}, _finish(run))]})
            return _usage_chunk(body, {"id": stream_id, **head}, runs)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": run.text},
                "logprobs": _chat_logprobs(engine, run) if wants_logprobs else None,
                "finish_reason": _finish(run),
            }
            for i, run in enumerate(runs)
        ]
        return {
            "id": f"chatcmpl-{runs[0].id}",
            **head,
            "object": "chat.completion",
            "choices": choices,
            "usage": _usage(runs),
        }

    # Handlers: llama.cpp ------------------------------------------------------------------------------

    def native_completion(
        self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None
    ) -> dict[str, Any] | None:
        """``POST /completion``: llama-server's request fields and answer."""
        unknown_neutral = [k for k, v in _NEUTRAL_NATIVE.items() if k in body and body[k] not in (v, None)]
        if unknown_neutral:
            raise ApiError(400, f"{unknown_neutral[0]} is not supported by lmbench", param=unknown_neutral[0])
        own = {"prompt", "n_predict", "n_probs", "seed", "n_cmpl", *_IGNORED_NATIVE, *_NEUTRAL_NATIVE}
        params = {k: v for k, v in body.items() if k not in _COMMON | own}
        n_predict = body.get("n_predict", -1)
        if isinstance(n_predict, bool) or not isinstance(n_predict, int) or n_predict == 0 or n_predict < -1:
            raise ApiError(
                400, "n_predict must be -1 (up to the server's cap) or a positive integer", param="n_predict"
            )
        params["max_tokens"] = self.settings.max_tokens_cap if n_predict == -1 else n_predict
        seed = body.get("seed")
        if seed is not None and seed != -1:
            params["seed"] = seed
        n_probs = body.get("n_probs", 0)
        if n_probs:
            params["logprobs"] = n_probs
        request = self._request(body, params, body.get("n_cmpl", 1))
        prompt = self._native_prompt(request, body.get("prompt"))
        on_piece = None
        if emit is not None:

            def on_piece(i: int, text: str | None) -> None:
                emit({"index": i, "content": text or "", "tokens": [], "stop": False, "id_slot": i})

        engine, runs = self._choices(request, prompt=prompt, on_piece=on_piece, cancel=cancel)
        answers = [_native_answer(engine, request, run, i, n_probs) for i, run in enumerate(runs)]
        if emit is not None:
            for answer in answers[:-1]:
                emit({**answer, "content": ""})
            return {**answers[-1], "content": ""}
        return answers[0] if len(answers) == 1 else {"results": answers}

    def _native_prompt(self, request: _Request, prompt: Any) -> str:
        """llama-server's prompt: a string, or token ids (and strings) turned into text."""
        if isinstance(prompt, str):
            return prompt
        if (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(p, int | str) and not isinstance(p, bool) for p in prompt)
        ):
            engine = self._engine(request)
            try:
                return "".join(p if isinstance(p, str) else engine.detokenize([p]) for p in prompt)
            except ParameterError as exc:
                raise ApiError(400, str(exc), param="prompt") from None
        raise ApiError(400, "prompt must be a string or a list of token ids and strings", param="prompt")

    def tokenize(self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
        """``POST /tokenize``: ``content`` as token ids (with their text pieces when asked)."""
        content = _text(body, "content")
        flags = {
            k: body.get(k, d) for k, d in (("add_special", False), ("parse_special", True), ("with_pieces", False))
        }
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ApiError(400, f"{name} must be true or false", param=name)
        engine = self._engine(self._request(body, {}))
        with engine.lock:
            tokens = engine.tokenize(content, add_bos=flags["add_special"], special=flags["parse_special"])
        if not flags["with_pieces"]:
            return {"tokens": tokens}
        return {"tokens": [{"id": t, "piece": _piece(engine.piece(t, special=True))} for t in tokens]}

    def detokenize(self, body: dict[str, Any], emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
        """``POST /detokenize``: token ids back to text."""
        engine = self._engine(self._request(body, {}))
        try:
            return {"content": engine.detokenize(body.get("tokens"))}  # type: ignore[arg-type]
        except ParameterError as exc:
            raise ApiError(400, str(exc), param="tokens") from None


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string", param=name)
    return value


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _usage(runs: list[Run]) -> dict[str, int]:
    prompt = runs[0].prompt_tokens if runs else 0
    completion = sum(r.completion_tokens for r in runs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _usage_chunk(body: dict[str, Any], head: dict[str, Any], runs: list[Run]) -> dict[str, Any] | None:
    """The last streamed chunk when ``stream_options.include_usage`` asks for it: no choices, the usage."""
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        return {**head, "choices": [], "usage": _usage(runs)}
    return None


def _finish(run: Run) -> str:
    """OpenAI's finish reasons: a cancelled run (client gone) counts as stopped."""
    return "length" if run.finish_reason == "length" else "stop"


def _text_choice(index: int, text: str, logprobs: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}


def _delta(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _completion_logprobs(run: Run, offset: int) -> dict[str, Any] | None:
    """OpenAI's legacy completion logprobs (tokens, their log-probabilities, top alternatives, offsets)."""
    if run.token_logprobs is None:
        return None
    entries = run.token_logprobs
    offsets, at = [], offset
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{alt["token"]: alt["logprob"] for alt in e.get("top", [])} for e in entries],
        "text_offset": offsets,
    }


def _chat_logprobs(engine: Engine, run: Run) -> dict[str, Any] | None:
    """OpenAI's chat logprobs: each token with its bytes, log-probability and top alternatives."""
    if run.token_logprobs is None:
        return None

    def entry(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": list(engine.piece(e["id"]))}

    return {"content": [{**entry(e), "top_logprobs": [entry(a) for a in e.get("top", [])]} for e in run.token_logprobs]}


def _piece(raw: bytes) -> str | list[int]:
    """A token's text as llama-server gives it: a string when it is valid UTF-8, else its bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def _native_settings(params: GenerationParams) -> dict[str, Any]:
    values = params.model_dump()
    values["stop"] = list(values["stop"])
    values["n_probs"] = values.pop("logprobs") or 0
    return values


def _native_answer(engine: Engine, request: _Request, run: Run, index: int, n_probs: int) -> dict[str, Any]:
    """llama-server's completion answer for one run."""
    if run.finish_reason == "length":
        stop_type = "limit"
    elif run.stop_word is not None:
        stop_type = "word"
    elif run.finish_reason == "stop":
        stop_type = "eos"
    else:
        stop_type = "none"
    prompt_ms = 1000 * (run.ttft_s or 0.0)
    predicted_ms = 1000 * max(run.total_s - (run.ttft_s or 0.0), 0.0)
    predicted_n = max(run.completion_tokens - 1, 0)
    answer: dict[str, Any] = {
        "index": index,
        "content": run.text,
        "tokens": [],
        "id_slot": index,
        "stop": True,
        "model": request.name,
        "tokens_predicted": run.completion_tokens,
        "tokens_evaluated": run.prompt_tokens,
        "tokens_cached": run.prompt_cached_tokens,
        "generation_settings": {"n_ctx": engine.n_ctx, "n_predict": run.max_tokens, **_native_settings(run.params)},
        "prompt": run.prompt,
        "has_new_line": "\n" in run.text,
        "truncated": run.finish_reason == "length" and run.prompt_tokens + run.completion_tokens >= engine.n_ctx,
        "stop_type": stop_type,
        "stopping_word": run.stop_word or "",
        "timings": {
            "prompt_n": run.prompt_tokens - run.prompt_cached_tokens,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / max(run.prompt_tokens - run.prompt_cached_tokens, 1),
            "prompt_per_second": 1000 * (run.prompt_tokens - run.prompt_cached_tokens) / prompt_ms
            if prompt_ms
            else None,
            "predicted_n": run.completion_tokens,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else None,
            "predicted_per_second": _finite(run.tokens_per_s),
        },
        "run_id": run.id,
    }
    if n_probs and run.token_logprobs is not None:
        answer["completion_probabilities"] = [
            {
                "id": e["id"],
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": list(engine.piece(e["id"])),
                "top_logprobs": [
                    {"id": a["id"], "token": a["token"], "logprob": a["logprob"], "bytes": list(engine.piece(a["id"]))}
                    for a in e.get("top", [])
                ],
            }
            for e in run.token_logprobs
        ]
    return answer


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    """A request body as a JSON object, or the ``ApiError`` that says what is wrong with it."""
    if len(raw) > limit:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limit}")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    if _deeper_than(body, MAX_BODY_DEPTH):
        raise ApiError(400, f"request body nests JSON more than {MAX_BODY_DEPTH} levels deep")
    return body


# The deepest JSON a request body may nest (a JSON schema of the deepest allowed nesting fits well within).
MAX_BODY_DEPTH = 200


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (walked without recursion:
    a body too deep for Python's stack could not be passed to a model worker)."""
    pending = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            pending += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            pending += [(v, depth + 1) for v in node]
    return False
