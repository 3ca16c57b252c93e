"""Tool (function) calls: tools offered to a chat, the calls the model makes, and the conversation around them.

A model whose chat template has a tools section (it reads the ``tools`` variable, as Qwen's,
Llama 3.x's and SmolLM3's do) gets the tools through it, in OpenAI's shape. Any other chat model
gets them the same documented way (llama.cpp's "generic" format): a system instruction lists each
tool's name, description and JSON schema of arguments. Either way the answer is JSON, constrained
by a grammar built from those schemas:

- ``{"tool_calls": [{"name": "get_weather", "parameters": {"city": "Paris"}}]}`` to call tools (the
  name first, as Llama 3.1's JSON tool calls have it), or
- ``{"response": "..."}`` to answer the user (only when ``tool_choice`` is ``"auto"``).

``tool_choice="required"`` allows only calls, a named function (``{"type": "function",
"function": {"name": ...}}``) only calls to it, and ``"none"`` offers no tools. So even a small
model's calls name a real function and carry arguments of the schema's shape (keywords a grammar
cannot enforce, such as ``minimum``, are checked by the ``tool_args_valid`` scorer instead).
The calls are parsed into OpenAI's shape (``{"id", "type": "function", "function": {"name",
"arguments": "<JSON text>"}}``) and recorded with the run (``Run.tool_calls``; the offered tools
in ``Run.tools``). Assistant messages with ``tool_calls`` and ``tool`` messages (with
``tool_call_id``) go back to the model in the same JSON, as assistant and user turns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._grammar import UNENFORCED_KEYWORDS, schema_grammar
from .errors import ParameterError

ToolChoice = str | Mapping[str, Any]
CHOICES = ("auto", "none", "required")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI-style tools as ``{"name", "description", "parameters"}`` dicts, or ``ParameterError`` saying why not.

    Accepts ``{"type": "function", "function": {...}}`` (OpenAI) and the bare ``{"name", ...}`` form.
    """
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence) or not tools:
        raise ParameterError('tools must be a non-empty list of {"type": "function", "function": {...}}', name="tools")
    checked: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        spec = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(spec, Mapping) or (isinstance(tool, Mapping) and tool.get("type", "function") != "function"):
            raise ParameterError(
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}}', name="tools"
            )
        name, parameters = spec.get("name"), spec.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(name, str) or not _NAME.match(name):
            raise ParameterError(f"tools[{i}] needs a name of letters, digits, _ or - (at most 64)", name="tools")
        if name in {t["name"] for t in checked}:
            raise ParameterError(f"tools[{i}]: two tools are named {name!r}", name="tools")
        if not isinstance(parameters, Mapping):
            raise ParameterError(f"tools[{i}] parameters must be a JSON schema (an object)", name="tools")
        description = spec.get("description") or ""
        checked.append({"name": name, "description": str(description), "parameters": dict(parameters)})
    return checked


def chosen(tools: list[dict[str, Any]], choice: ToolChoice | None) -> list[dict[str, Any]]:
    """The tools a call may use under ``tool_choice`` (all, none, or the named one)."""
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return []
    name = choice.get("function", {}).get("name") if isinstance(choice, Mapping) else None
    if not isinstance(name, str):
        raise ParameterError(
            f'tool_choice must be one of {", ".join(CHOICES)} or {{"type": "function", "function": {{"name": ...}}}}',
            name="tool_choice",
        )
    named = [t for t in tools if t["name"] == name]
    if not named:
        raise ParameterError(f"tool_choice names {name!r}, which is not among the tools", name="tool_choice")
    return named


def _enforceable(schema: Any) -> Any:
    """``schema`` without the keywords a grammar cannot enforce (the scorer checks those)."""
    if isinstance(schema, list):
        return [_enforceable(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    return {k: _enforceable(v) for k, v in schema.items() if k not in UNENFORCED_KEYWORDS}


def output_schema(tools: list[dict[str, Any]], *, may_answer: bool, parallel: bool) -> dict[str, Any]:
    """The JSON schema of the model's answer: calls to ``tools`` (one, or several when ``parallel``), or a reply."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t["name"]}, "parameters": _enforceable(t["parameters"])},
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    array: dict[str, Any] = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}}
    array.update(minItems=1, **({} if parallel else {"maxItems": 1}))
    call = {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if not may_answer:
        return call
    answer = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
    return {"anyOf": [call, {**answer, "additionalProperties": False}]}


def instruction(tools: list[dict[str, Any]], *, may_answer: bool) -> str:
    """The system instruction that offers ``tools`` to a model whose template has no tools section."""
    listed = json.dumps(tools, ensure_ascii=False)
    calls = '{"tool_calls": [{"name": "<tool name>", "parameters": {<the arguments>}}]}'
    how = (
        f'either {calls} to call tools, or {{"response": "<your answer>"}} to answer directly' if may_answer else calls
    )
    return f"You can call these tools (the arguments of each follow its JSON schema):\n{listed}\nAnswer in JSON: {how}."


def fold(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages with tool calls and tool results as plain turns: an assistant's calls as the JSON it answered,
    each ``tool`` message (``tool_call_id``, ``content``) as a user turn ``{"tool_result": ...}``."""
    names: dict[str, str] = {}
    folded: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            folded.append(message)  # check_messages says what is wrong with it
            continue
        role, calls = message.get("role"), message.get("tool_calls")
        if role == "assistant" and calls:
            parsed = [_call_of(call, i) for call in calls]
            names.update({c["id"]: c["name"] for c in parsed if c["id"]})
            said = {"tool_calls": [{"name": c["name"], "parameters": c["arguments"]} for c in parsed]}
            folded.append({"role": "assistant", "content": json.dumps(said, ensure_ascii=False)})
        elif role == "tool":
            call_id = message.get("tool_call_id")
            result = {"tool_call_id": call_id, "name": names.get(str(call_id)), "content": message.get("content")}
            folded.append({"role": "user", "content": json.dumps({"tool_result": result}, ensure_ascii=False)})
        else:
            folded.append({k: v for k, v in message.items() if k != "tool_calls" or v})
    return folded


def _call_of(call: Any, i: int) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ParameterError(
            f'messages[{i}] tool_calls must be {{"id", "function": {{"name", "arguments"}}}}', name="messages"
        )
    arguments = function.get("arguments") or "{}"
    try:
        values = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise ParameterError(
            f"messages[{i}] tool call arguments are not JSON: {arguments!r}", name="messages"
        ) from None
    return {"id": call.get("id"), "name": function["name"], "arguments": values}


@dataclass(frozen=True)
class Offer:
    """The tools a chat offers the model under its ``tool_choice``, and whether it may answer in words."""

    tools: list[dict[str, Any]]
    may_answer: bool

    def instruction(self) -> dict[str, str]:
        """The system message that offers the tools to a model whose template has no tools section."""
        return {"role": "system", "content": instruction(self.tools, may_answer=self.may_answer)}

    def for_template(self) -> list[dict[str, Any]]:
        """The tools as a chat template's ``tools`` variable reads them (OpenAI's shape, as Hugging Face has them)."""
        return [{"type": "function", "function": tool} for tool in self.tools]


def offer(offered: list[dict[str, Any]], tool_choice: ToolChoice | None) -> Offer | None:
    """What ``tool_choice`` offers of the checked tools (None: nothing, as with ``"none"``)."""
    usable = chosen(offered, tool_choice)
    return Offer(usable, may_answer=tool_choice in (None, "auto")) if usable else None


def prepare(
    messages: Sequence[Mapping[str, Any]],
    tools: Any,
    tool_choice: ToolChoice | None = "auto",
    *,
    parallel: bool = True,
    instruct: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """The conversation with the tools offered (the fallback instruction first, unless ``instruct`` is False:
    then whoever renders the conversation offers them), the output's JSON schema and the tools.

    Without tools (or with ``tool_choice="none"``) the messages are only folded and there is no schema.
    """
    folded = fold(messages)
    if tools is None:
        return folded, None, []
    offered = check_tools(tools)
    offering = offer(offered, tool_choice)
    if offering is None:
        return folded, None, offered
    schema = output_schema(offering.tools, may_answer=offering.may_answer, parallel=parallel)
    try:
        schema_grammar(schema)
    except ValueError as exc:
        raise ParameterError(f"the tools' schemas cannot constrain the output: {exc}", name="tools") from None
    return ([offering.instruction()] if instruct else []) + folded, schema, offered


def parse_calls(text: str, run_id: str) -> list[dict[str, Any]]:
    """The tool calls in a model's answer, in OpenAI's shape with ids (empty when it answered in words)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return []
    calls = answer.get("tool_calls") if isinstance(answer, dict) else None
    if not isinstance(calls, list):
        return []
    return [
        {
            "id": f"call_{run_id[:16]}_{i}",
            "type": "function",
            "function": {"name": call.get("name"), "arguments": json.dumps(call.get("parameters"), ensure_ascii=False)},
        }
        for i, call in enumerate(calls)
        if isinstance(call, dict) and isinstance(call.get("name"), str)
    ]


def reply(text: str) -> str:
    """What a tool-offering answer says to the user: its ``response``, nothing beside calls, else the text."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return str(answer["response"])
    return "" if isinstance(answer, dict) and "tool_calls" in answer else text
