"""OpenAI's Responses dialect: ``POST /v1/responses`` (the ``openai`` client's ``responses.create``, Codex's),
for the subset local servers answer: ``input`` as text or items, ``instructions``, function tools,
``max_output_tokens``, streaming events.

Input items map onto lmbench's chat: messages (``input_text`` / ``output_text`` parts),
``function_call`` items as an assistant's tool calls and ``function_call_output`` items as tool
messages. Nothing is stored server-side beyond the recorded run (``previous_response_id`` is refused).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from .._prompting import check_messages
from ..generation import Cancel
from ..run import Run
from ..tools import prepare, reply
from ._requests import Generating
from ._service import Emit, Service


class ResponsesRequest(Generating):
    """``POST /v1/responses``."""

    ignored: ClassVar[frozenset[str]] = frozenset({"store", "metadata", "user", "text", "truncation", "service_tier"})

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    n_predict: int | None = Field(None, ge=1)  # llama-server's name for the limit, which it accepts here too
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: None = None  # lmbench keeps no conversation state: send the whole input

    @model_validator(mode="after")
    def _conversation(self) -> ResponsesRequest:
        check_messages(
            prepare(self.conversation(), self.chat_tools(), self.choice(), parallel=self.parallel_tool_calls)[0]
        )
        return self

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self.n_predict is not None:
            params["max_tokens"] = self.n_predict
        if self.max_output_tokens is not None:
            params["max_tokens"] = self.max_output_tokens
        return params

    def conversation(self) -> list[dict[str, Any]]:
        """The input as chat messages (instructions first)."""
        turns: list[dict[str, Any]] = [{"role": "system", "content": self.instructions}] if self.instructions else []
        items = [{"role": "user", "content": self.input}] if isinstance(self.input, str) else self.input
        for item in items:
            kind = item.get("type", "message")
            if kind == "function_call":
                function = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
                call = {"id": item.get("call_id"), "type": "function", "function": function}
                turns.append({"role": "assistant", "content": "", "tool_calls": [call]})
            elif kind == "function_call_output":
                turns.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": str(item.get("output"))})
            else:
                role = "system" if item.get("role") == "developer" else item.get("role")
                turns.append({"role": role, "content": _text(item.get("content"))})
        return turns

    def chat_tools(self) -> list[dict[str, Any]] | None:
        functions = [t for t in self.tools or [] if t.get("type") == "function"]
        if not functions:
            return None
        keys = ("name", "description", "parameters")
        return [{"type": "function", "function": {k: t[k] for k in keys if k in t}} for t in functions]

    def choice(self) -> str | dict[str, Any]:
        if isinstance(self.tool_choice, dict):
            return {"type": "function", "function": {"name": self.tool_choice.get("name")}}
        return self.tool_choice


def _text(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def responses(service: Service, request: ResponsesRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any] | None:
    """``POST /v1/responses``: an output message, or function calls; streamed as Responses events."""
    jobs = service.prepare(request)
    tools = bool(request.chat_tools()) and request.choice() != "none"
    response_id, message_id = f"resp_{jobs.run_ids[0]}", f"msg_{jobs.run_ids[0]}"
    shell = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": jobs.name,
        "instructions": request.instructions,
        "tools": request.tools or [],
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        "temperature": jobs.params.temperature,
        "top_p": jobs.params.top_p,
        "max_output_tokens": request.max_output_tokens or request.n_predict,
        "metadata": {},
        "error": None,
        "incomplete_details": None,
    }
    sequence = iter(range(1 << 30))
    on_piece = None
    if emit is not None:

        def send(kind: str, **fields: Any) -> None:
            emit({"type": kind, "sequence_number": next(sequence), **fields})

        send("response.created", response={**shell, "status": "in_progress", "output": []})
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}

        def on_piece(i: int, text: str | None) -> None:
            if text and not tools:
                if not opened:
                    opened.append(True)
                    item = {"type": "message", "id": message_id, "status": "in_progress", "role": "assistant"}
                    send("response.output_item.added", output_index=0, item={**item, "content": []})
                    send("response.content_part.added", **where, part=part)
                send("response.output_text.delta", **where, delta=text, logprobs=[])

    opened: list[bool] = []
    _, (run,) = service.generate(
        jobs,
        messages=request.conversation(),
        on_piece=on_piece,
        cancel=cancel,
        tools=request.chat_tools(),
        tool_choice=request.choice(),
        parallel_tool_calls=request.parallel_tool_calls,
    )
    output = _output(run, tools, message_id)
    done = {**shell, **_status(run), "output": output, "usage": _usage(run)}
    if emit is None:
        return done
    for index, item in enumerate(output):
        if not (opened and index == 0):
            send("response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            text = item["content"][0]["text"]
            at = {"item_id": message_id, "output_index": index, "content_index": 0}
            send("response.output_text.done", **at, text=text, logprobs=[])
            send("response.content_part.done", **at, part=item["content"][0])
        send("response.output_item.done", output_index=index, item=item)
    send("response.completed", response=done)
    return None


def _output(run: Run, tools: bool, message_id: str) -> list[dict[str, Any]]:
    """The response's output items: the answer as a message, and its function calls."""
    text = reply(run.text) if tools else run.text
    items: list[dict[str, Any]] = []
    if text or not run.tool_calls:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        items.append(
            {"type": "message", "id": message_id, "status": "completed", "role": "assistant", "content": content}
        )
    for call in run.tool_calls or []:
        function = call["function"]
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{call['id']}",
                "call_id": call["id"],
                "name": function["name"],
                "arguments": function["arguments"],
                "status": "completed",
            }
        )
    return items


def _status(run: Run) -> dict[str, Any]:
    if run.finish_reason == "length":
        return {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    return {"status": "completed"}


def _usage(run: Run) -> dict[str, Any]:
    return {
        "input_tokens": run.prompt_tokens,
        "input_tokens_details": {"cached_tokens": run.prompt_cached_tokens},
        "output_tokens": run.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": run.prompt_tokens + run.completion_tokens,
    }
