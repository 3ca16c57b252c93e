"""Anthropic's Messages dialect: ``POST /v1/messages`` (the ``anthropic`` SDK's, Claude Code's).

A request is mapped onto the OpenAI-style conversation lmbench's chat takes: ``system``, text
blocks, ``tool_use`` blocks (as an assistant's tool calls) and ``tool_result`` blocks (as tool
messages); ``tools`` with ``input_schema`` and ``tool_choice`` (``auto``, ``any``, ``tool``,
``none``) as ``lmbench.tools`` offers them. Streams are Anthropic's named events.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from .._prompting import check_messages
from ..generation import Cancel
from ..run import Run
from ..tools import prepare, reply
from ._requests import Body, Generating
from ._service import Emit, Service


class ToolChoice(Body):
    """``tool_choice``: ``auto``, ``any`` (some tool), ``tool`` (the named one) or ``none``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class MessagesRequest(Generating):
    """``POST /v1/messages``: Anthropic's fields; ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` as lmbench's."""

    ignored: ClassVar[frozenset[str]] = frozenset({"metadata", "service_tier", "thinking"})

    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _conversation(self) -> MessagesRequest:
        check_messages(prepare(self.conversation(), self.openai_tools(), self.choice(), parallel=self.parallel())[0])
        return self

    def parallel(self) -> bool:
        return not (self.tool_choice and self.tool_choice.disable_parallel_tool_use)

    def parameters(self) -> dict[str, Any]:
        params = {**super().parameters(), "max_tokens": self.max_tokens}
        if self.stop_sequences:
            params["stop"] = self.stop_sequences
        return params

    def conversation(self) -> list[dict[str, Any]]:
        """The messages in OpenAI's shape (system first, tool uses as calls, tool results as tool messages)."""
        turns: list[dict[str, Any]] = []
        if self.system:
            turns.append({"role": "system", "content": _text(self.system)})
        for message in self.messages:
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    turns.append(
                        {
                            "role": "tool",
                            "tool_call_id": block.get("tool_use_id"),
                            "content": _text(block.get("content")),
                        }
                    )
            calls = [_call(b) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            texts = [b for b in blocks if not isinstance(b, dict) or b.get("type") not in ("tool_use", "tool_result")]
            if texts or calls:
                turn: dict[str, Any] = {"role": message.get("role"), "content": _text(texts) if texts else ""}
                turns.append({**turn, "tool_calls": calls} if calls else turn)
        return turns

    def openai_tools(self) -> list[dict[str, Any]] | None:
        if not self.tools:
            return None
        return [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema"),
                },
            }
            for t in self.tools
        ]

    def choice(self) -> str | dict[str, Any]:
        kind = self.tool_choice.type if self.tool_choice else "auto"
        if kind == "tool":
            return {"type": "function", "function": {"name": self.tool_choice.name if self.tool_choice else None}}
        return {"any": "required"}.get(kind, kind)


def _text(content: Any) -> str:
    """Text blocks (or a string) as one string."""
    if isinstance(content, str) or content is None:
        return content or ""
    return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)


def _call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(block.get("input") or {})
    return {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}


def messages(service: Service, request: MessagesRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any] | None:
    """``POST /v1/messages``: a message of text or ``tool_use`` blocks (with streaming events)."""
    jobs = service.prepare(request)
    tools = bool(request.tools) and request.choice() != "none"
    message_id = f"msg_{jobs.run_ids[0]}"
    streamed: list[bool] = []  # whether the text block was opened while streaming
    on_piece = None
    if emit is not None:
        start = {"id": message_id, "type": "message", "role": "assistant", "model": jobs.name, "content": []}
        emit({"type": "message_start", "message": {**start, "stop_reason": None, "usage": _usage(None)}})

        def on_piece(i: int, text: str | None) -> None:
            if text and not tools:
                if not streamed:
                    streamed.append(True)
                    emit({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                emit({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    _, (run,) = service.generate(
        jobs,
        messages=request.conversation(),
        on_piece=on_piece,
        cancel=cancel,
        tools=request.openai_tools(),
        tool_choice=request.choice(),
        parallel_tool_calls=request.parallel(),
    )
    blocks = _blocks(run, tools)
    if emit is None:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": jobs.name,
            "content": blocks,
            "stop_reason": _stop_reason(run, request),
            "stop_sequence": _stop_sequence(run, request),
            "usage": _usage(run),
        }
    if streamed:  # the text was sent piece by piece
        emit({"type": "content_block_stop", "index": 0})
    for index, block in enumerate([] if streamed else blocks):
        if block["type"] == "text":
            emit({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            emit({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        emit({"type": "content_block_delta", "index": index, "delta": delta})
        emit({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": _stop_reason(run, request), "stop_sequence": _stop_sequence(run, request)}
    emit({"type": "message_delta", "delta": stop, "usage": {"output_tokens": run.completion_tokens}})
    return {"type": "message_stop"}


def _blocks(run: Run, tools: bool) -> list[dict[str, Any]]:
    """The answer's content blocks: its text, or (when tools were offered) its reply and ``tool_use`` blocks."""
    text = reply(run.text) if tools else run.text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not run.tool_calls else []
    for call in run.tool_calls or []:
        function = call["function"]
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": json.loads(function["arguments"])}
        )
    return blocks


def _stop_sequence(run: Run, request: MessagesRequest) -> str | None:
    """The request's stop sequence that ended the answer (not the template's end-of-turn text)."""
    return run.stop_word if run.stop_word in (request.stop_sequences or []) else None


def _stop_reason(run: Run, request: MessagesRequest) -> str:
    if run.tool_calls:
        return "tool_use"
    if run.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if _stop_sequence(run, request) else "end_turn"


def _usage(run: Run | None) -> dict[str, int]:
    return {"input_tokens": run.prompt_tokens if run else 0, "output_tokens": run.completion_tokens if run else 0}
