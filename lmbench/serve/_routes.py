"""``ROUTES``, the one list of routes: the standalone server, the Jupyter extension and docs/api.md read it.

Each route names its request model (the body's or the query's fields, types and bounds) and the
dialect function that answers it: ``answer(service, request, emit, cancel)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..generation import Cancel
from . import _anthropic, _embeddings, _llamacpp, _lmbench, _openai, _responses
from ._requests import NoQuery, parse
from ._service import Emit, Service

Answer = Callable[[Service, Any, Emit | None, Cancel], Any]


@dataclass(frozen=True)
class Route:
    """One HTTP route: where it is, what its request looks like, which function answers it, and what it does."""

    method: str
    paths: tuple[str, ...]  # without the leading slash; each transport puts its prefix before them
    answer: Answer
    request: type[BaseModel]
    dialect: str
    summary: str
    streams: bool = False  # answers "stream": true with server-sent events
    done_marker: bool = False  # a stream ends with "data: [DONE]"
    named_events: bool = False  # each streamed event has an "event:" line naming its type (Anthropic's streams)
    records: bool = False  # each answer is recorded as runs
    public: bool = False  # answered without the API key

    @property
    def handler(self) -> str:
        """The route's name (its answering function's), as the supervisor sends it to a model worker."""
        return self.answer.__name__

    @property
    def uses_model(self) -> bool:
        """Whether answering needs a model (then a model worker answers it)."""
        return self.method == "POST"


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        ("api/generate",),
        _lmbench.generate,
        _lmbench.GenerateRequest,
        "lmbench",
        "the LM Studio guides' request: prompt and parameters in, text, run id, usage and timings out",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route(
        "GET",
        ("api/runs",),
        _lmbench.runs,
        _lmbench.RunsQuery,
        "lmbench",
        "recorded runs, newest last (?experiment=&limit=)",
    ),
    Route(
        "GET",
        ("api/params",),
        _lmbench.params,
        NoQuery,
        "lmbench",
        "every generation parameter: type, default, range, description",
    ),
    Route("GET", ("api/status",), _lmbench.status, NoQuery, "lmbench", "the server's model, limits and version"),
    Route(
        "GET",
        ("v1/models", "models"),
        _openai.list_models,
        NoQuery,
        "openai",
        "the models a request may name, each once",
    ),
    Route(
        "POST",
        ("v1/completions", "completions"),
        _openai.completion,
        _openai.CompletionRequest,
        "openai",
        "text completion (prompts as text or token ids, n choices, logprobs, echo with the prompt's logprobs, stream)",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route(
        "POST",
        ("v1/chat/completions", "chat/completions"),
        _openai.chat_completion,
        _openai.ChatRequest,
        "openai",
        "chat through the model's template (n choices, logprobs, tool calls, stream with usage)",
        streams=True,
        done_marker=True,
        records=True,
    ),
    Route(
        "POST",
        ("v1/embeddings", "embeddings"),
        _embeddings.embeddings,
        _embeddings.EmbeddingsRequest,
        "openai",
        "embeddings of texts or token ids (normalised; float or base64)",
    ),
    Route(
        "POST",
        ("v1/responses", "responses"),
        _responses.responses,
        _responses.ResponsesRequest,
        "openai",
        "OpenAI's Responses API: input text or items, instructions, function tools, streamed events",
        streams=True,
        named_events=True,
        records=True,
    ),
    Route(
        "POST",
        ("v1/messages",),
        _anthropic.messages,
        _anthropic.MessagesRequest,
        "anthropic",
        "Anthropic's Messages API: system, content blocks, stop sequences, tool use, named stream events",
        streams=True,
        named_events=True,
        records=True,
    ),
    Route(
        "POST",
        ("completion",),
        _llamacpp.native_completion,
        _llamacpp.NativeCompletionRequest,
        "llama.cpp",
        "llama-server's completion (n_predict, n_probs, logit_bias, timings, stop_type, stream with per-token "
        "probabilities, timings and prompt progress)",
        streams=True,
        records=True,
    ),
    Route(
        "POST",
        ("tokenize",),
        _llamacpp.tokenize,
        _llamacpp.TokenizeRequest,
        "llama.cpp",
        "text to token ids (content, add_special, parse_special, pieces; vLLM's prompt, add_special_tokens)",
    ),
    Route("POST", ("detokenize",), _llamacpp.detokenize, _llamacpp.DetokenizeRequest, "llama.cpp", "token ids to text"),
    Route(
        "GET",
        ("tokenizer_info",),
        _llamacpp.tokenizer_info,
        NoQuery,
        "vLLM",
        "special tokens, chat template, context length (for lm-evaluation-harness's remote tokenizer)",
    ),
    Route(
        "GET",
        ("health", "v1/health"),
        _llamacpp.health,
        NoQuery,
        "llama.cpp",
        "ready or not (no API key needed)",
        public=True,
    ),
    Route(
        "GET",
        ("props",),
        _llamacpp.props,
        NoQuery,
        "llama.cpp",
        "default settings, context, slots, chat template (no file paths)",
    ),
)

HANDLERS: dict[str, Route] = {r.handler: r for r in ROUTES}


def route_pattern() -> str:
    """A regex group matching every route path (longest first), with an optional trailing slash."""
    paths = sorted((p for r in ROUTES for p in r.paths), key=len, reverse=True)
    return "(" + "|".join(p.replace("/", r"\/") for p in paths) + r")/?"


def routes_table() -> str:
    """Every route as a Markdown table (docs/api.md's copy is checked against it)."""
    rows = ["| route | dialect | what it does | records runs |", "| --- | --- | --- | --- |"]
    for r in ROUTES:
        where = ", ".join(f"`{r.method} /{p}`" for p in r.paths)
        rows.append(f"| {where} | {r.dialect} | {r.summary} | {'yes' if r.records else 'no'} |")
    return "\n".join(rows)


def find_route(path: str) -> dict[str, Route]:
    """The routes at ``path`` by method (empty when there are none)."""
    return {r.method: r for r in ROUTES if path in r.paths}


def answer(service: Service, handler: str, payload: dict[str, Any] | None = None) -> Any:
    """Answer one route in this process from a plain payload (as a transport would): for Python callers and tests."""
    route = HANDLERS[handler]
    return service.call(route, parse(route.request, payload or {}))
