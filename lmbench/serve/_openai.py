"""OpenAI's dialect: ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (also without ``/v1``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar, Literal

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF
from pydantic import ConfigDict, Field, field_validator, model_validator

from .._prompting import check_messages
from ..engine._engine import Engine
from ..errors import LmbenchError, ParameterError
from ..generation import Cancel
from ..run import Run
from ..tools import prepare, reply
from ._errors import ApiError, api_error
from ._requests import MAX_CHOICES, Body, Generating, NoQuery
from ._service import SYSTEM_FINGERPRINT, Emit, Service, usage


class JsonSchemaFormat(Body):
    """``response_format.json_schema``: a named JSON schema."""

    model_config = ConfigDict(extra="ignore")

    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class ResponseFormat(Body):
    """``response_format``: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Body):
    """``stream_options``: whether the stream ends with a usage chunk."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class OpenAIRequest(Generating):
    """What OpenAI's completions and chat completions share: choices, token limit, output format."""

    # Fields that do not change the output: accepted and ignored.
    ignored: ClassVar[frozenset[str]] = frozenset({"user", "metadata", "store", "service_tier"})

    n: int = Field(1, ge=1, le=MAX_CHOICES)
    max_completion_tokens: int | None = None
    n_predict: int | None = Field(None, ge=1)  # llama-server's name for max_tokens, which it accepts here too
    response_format: ResponseFormat | None = None
    stream_options: StreamOptions | None = None

    def choices(self) -> int:
        return self.n

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self.n_predict is not None and "max_tokens" not in params:
            params["max_tokens"] = self.n_predict
        if self.max_completion_tokens is not None:
            params["max_tokens"] = self.max_completion_tokens
        kind = self.response_format.type if self.response_format else "text"
        if kind == "json_object":
            params["grammar"] = JSON_GBNF
        elif kind == "json_schema":
            spec = self.response_format.json_schema if self.response_format else None
            params["json_schema"] = spec.schema_ if spec else {}
        return params

    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


Prompt = str | list[int]


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions``: a prompt or a list of them, each a string or a list of token ids.

    With ``echo`` and ``logprobs`` the prompt's own tokens come back with their log-probabilities
    (the first one's null, as OpenAI's legacy completions give them); ``max_tokens`` 0 then scores
    the prompt and generates nothing.
    """

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)
    echo: bool = False
    best_of: int | None = None  # accepted; n choices are what lmbench makes
    suffix: None = None  # insertion is not supported: only null is accepted

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str] | list[int] | list[list[int]]) -> Any:
        if isinstance(value, list) and (not value or any(isinstance(p, list) and not p for p in value)):
            raise ValueError("give at least one prompt, and no empty list of token ids")
        return value

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self.max_tokens:  # 0 (score the prompt only) is not a generation parameter
            params["max_tokens"] = self.max_tokens
        return params

    def prompts(self) -> list[Prompt]:
        """Every prompt: a string, or token ids."""
        value = self.prompt
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return [value]
        return list(value)  # type: ignore[arg-type]

    def scores_prompt(self) -> bool:
        """Whether the prompt's tokens come back with their log-probabilities (echo with logprobs)."""
        return self.echo and self.parameters().get("logprobs") is not None


class ChatRequest(OpenAIRequest):
    """``POST /v1/chat/completions``: messages through the model's chat template."""

    messages: list[dict[str, Any]]
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    functions: None = None  # OpenAI's old function calling: use tools

    @model_validator(mode="after")
    def _conversation(self) -> ChatRequest:
        if self.tools and self.response_format and self.response_format.type != "text":
            raise ParameterError("give tools or response_format, not both", name="response_format")
        check_messages(prepare(self.messages, self.tools, self.choice(), parallel=self.parallel_tool_calls)[0])
        return self

    def choice(self) -> str | dict[str, Any]:
        return self.tool_choice or "auto"

    def offers_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self.logprobs:
            params["logprobs"] = self.top_logprobs or 0
        return params


def list_models(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /v1/models``: each model once, by its alias."""
    data = [{"id": i, "object": "model", "created": service.started, "owned_by": "lmbench"} for i in service.ids()]
    return {"object": "list", "data": data}


def completion(
    service: Service, request: CompletionRequest, emit: Emit | None, cancel: Cancel
) -> dict[str, Any] | None:
    """``POST /v1/completions``: each prompt's choices, in order (``index`` = prompt x n + choice)."""
    if request.max_tokens == 0 and not request.scores_prompt():
        raise ApiError(400, "max_tokens 0 generates nothing: it needs echo and logprobs", param="max_tokens")
    prompts = request.prompts()
    if len(prompts) > 1 and emit is not None:
        raise ApiError(400, "stream one prompt at a time", param="prompt")
    jobs = service.prepare(request)
    head = {"object": "text_completion", "created": int(time.time()), "model": jobs.name}
    stream_id = f"cmpl-{jobs.run_ids[0]}"
    engine = service.engine(jobs.path)
    texts = [_prompt_text(engine, p) for p in prompts]
    echoed = _prompt_logprobs(engine, prompts, texts, jobs.params.logprobs or 0) if request.scores_prompt() else None
    if request.max_tokens == 0:
        assert echoed is not None
        choices = [_text_choice(i, text, echoed[i], "length") for i, text in enumerate(texts)]
        tokens = sum(len(e["tokens"]) for e in echoed)
        return {
            "id": f"cmpl-{jobs.run_ids[0]}",
            **head,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
        }
    on_piece = None
    if emit is not None:

        def on_piece(i: int, text: str | None) -> None:
            emit({"id": stream_id, **head, "choices": [_text_choice(i, text or "", None, None)]})

    runs: list[Run] = []
    choices = []
    for k, prompt in enumerate(texts):
        mine = jobs if k == 0 else dataclasses.replace(jobs, run_ids=[])
        _, made = service.generate(mine, prompt=prompt, on_piece=on_piece, cancel=cancel)
        for i, run in enumerate(made):
            echo = prompt if request.echo else ""
            logprobs = _completion_logprobs(run, len(echo))
            if echoed is not None and logprobs is not None:
                logprobs = _joined(echoed[k], logprobs)
            choices.append(_text_choice(k * jobs.n + i, echo + run.text, logprobs, finish(run)))
        runs += made
    if emit is not None:
        for i, run in enumerate(runs):
            emit({"id": stream_id, **head, "choices": [_text_choice(i, "", None, finish(run))]})
        return _usage_chunk(request, {"id": stream_id, **head}, runs)
    return {
        "id": f"cmpl-{runs[0].id}",
        **head,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(runs),
    }


def _prompt_text(engine: Engine, prompt: Prompt) -> str:
    """A prompt as text: token ids are written out (a leading BOS, which generation adds again, left off)."""
    if isinstance(prompt, str):
        return prompt
    tokens = _checked(engine, prompt)
    if tokens and tokens[0] == llama_cpp.llama_vocab_bos(engine.vocab):
        tokens = tokens[1:]
    return b"".join(engine.piece(t) for t in tokens).decode("utf-8", errors="replace")


def _checked(engine: Engine, tokens: list[int]) -> list[int]:
    try:
        engine.detokenize(tokens)  # refuses ids outside the vocabulary
    except ParameterError as exc:
        raise ApiError(400, str(exc), param="prompt") from None
    return tokens


def _prompt_logprobs(engine: Engine, prompts: list[Prompt], texts: list[str], top: int) -> list[dict[str, Any]]:
    """Each prompt's tokens with their log-probabilities, scored together (OpenAI's legacy echo).

    A string is tokenized as generation tokenizes it (with the model's BOS); token ids are taken
    as they are, and scored after the model's BOS when it uses one and they do not start with it
    (as a text prompt would be). The first token's log-probability is null; ``text_offset`` indexes the
    echoed ``texts`` (a space the tokenizer put before the first word has no place there).
    """
    bos = int(llama_cpp.llama_vocab_bos(engine.vocab))
    adds_bos = bool(llama_cpp.llama_vocab_get_add_bos(engine.vocab)) and bos >= 0
    entries = []  # (the tokens shown, the sequence scored, where its scoring starts)
    for prompt in prompts:
        tokens = engine.tokenize(prompt) if isinstance(prompt, str) else _checked(engine, prompt)
        lead = [bos] if adds_bos and tokens[0] != bos else []
        entries.append((tokens, lead + tokens, len(lead) or 1))
    scorable = [(sequence, start) for _, sequence, start in entries if len(sequence) > 1]
    try:
        results = iter(engine.score([q for q, _ in scorable], start=[k for _, k in scorable], top=top))
    except LmbenchError as exc:
        raise api_error(exc) from None

    def text(token: int) -> str:
        return engine.piece(token).decode("utf-8", errors="replace")

    answers = []
    for (tokens, sequence, _), echoed in zip(entries, texts, strict=True):
        result = next(results) if len(sequence) > 1 else None
        unscored = len(tokens) - (0 if result is None else len(result.tokens))
        logprobs: list[float | None] = [None] * unscored
        tops: list[dict[str, float] | None] = [None] * unscored
        if result is not None:
            logprobs += [float(v) for v in result.logprobs]
            tops += [
                {text(int(t)): float(v) for t, v in zip(ids, values, strict=True)}
                for ids, values in zip(result.top_ids, result.top_logprobs, strict=True)
            ]
        logprobs[0] = tops[0] = None  # nothing comes before the first token (a BOS added here is not shown)
        pieces = [text(t) for t in tokens]
        joined = "".join(pieces)
        extra = len(joined) - len(echoed) if joined.endswith(echoed) else 0
        offsets = [max(sum(map(len, pieces[:i])) - extra, 0) for i in range(len(pieces))]
        answers.append({"tokens": pieces, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
    return answers


def _joined(prompt: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """The prompt's logprobs followed by the completion's (whose offsets already count the echoed prompt)."""
    return {key: prompt[key] + completion[key] for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}


def chat_completion(service: Service, request: ChatRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any] | None:
    """``POST /v1/chat/completions``: with ``tools``, the calls come back as ``tool_calls`` (streamed whole)."""
    jobs = service.prepare(request)
    head = {
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": jobs.name,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    stream_id = f"chatcmpl-{jobs.run_ids[0]}"
    tools = request.offers_tools()
    on_piece = None
    begun: set[int] = set()

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": stream_id, **head, "choices": [_delta(i, delta, finish)]}

    if emit is not None:

        def on_piece(i: int, text: str | None) -> None:
            if i not in begun:  # a choice's first chunk carries the role and empty content, as OpenAI sends it
                begun.add(i)
                emit(chunk(i, {"role": "assistant", "content": ""}))
            if text and not tools:  # an answer offered tools is JSON: its calls or reply are sent when complete
                emit(chunk(i, {"content": text}))

    engine, runs = service.generate(
        jobs,
        messages=request.messages,
        on_piece=on_piece,
        cancel=cancel,
        tools=request.tools,
        tool_choice=request.choice(),
        parallel_tool_calls=request.parallel_tool_calls,
    )
    if on_piece is not None and emit is not None:
        for i, run in enumerate(runs):
            on_piece(i, None)
            if run.tool_calls:
                calls = [{"index": k, **call} for k, call in enumerate(run.tool_calls)]
                emit(chunk(i, {"tool_calls": calls}))
            elif tools and reply(run.text):
                emit(chunk(i, {"content": reply(run.text)}))
            emit(chunk(i, {}, finish(run)))
        return _usage_chunk(request, {"id": stream_id, **head}, runs)
    choices = [
        {
            "index": i,
            "message": _message(run, tools),
            "logprobs": _chat_logprobs(engine, run) if request.logprobs else None,
            "finish_reason": finish(run),
        }
        for i, run in enumerate(runs)
    ]
    return {
        "id": f"chatcmpl-{runs[0].id}",
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage(runs),
    }


def _message(run: Run, tools: bool) -> dict[str, Any]:
    """The assistant's message: its text, or (when tools were offered) its reply or its calls."""
    if run.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": run.tool_calls}
    return {"role": "assistant", "content": reply(run.text) if tools else run.text}


def _usage_chunk(request: OpenAIRequest, head: dict[str, Any], runs: list[Run]) -> dict[str, Any] | None:
    """The last streamed chunk when ``stream_options.include_usage`` asks for it: no choices, the usage."""
    return {**head, "choices": [], "usage": usage(runs)} if request.wants_usage() else None


def finish(run: Run) -> str:
    """OpenAI's finish reasons: a cancelled run (client gone) counts as stopped."""
    if run.tool_calls:
        return "tool_calls"
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
