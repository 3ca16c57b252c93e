"""Chat: OpenAI-style messages through the model's own chat template, recorded like any run.

How a conversation becomes the model's prompt (the GGUF template in a sandbox, or the ``plain``
transcript for a model without one) is ``lmbench._prompting``, the one rule every door follows;
``Run.chat_format`` records which was used, ``Run.messages`` the conversation, ``Run.prompt`` its
last user message and ``Run.prompt_sent`` the rendered text.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import tools as tools_mod
from ._prompting import check_messages, render
from .engine._engine import Engine, load_engine
from .errors import ParameterError
from .generation import Cancel, Job, Recorder, complete
from .params import GenerationParams, check_text, validate_params
from .presets import resolve_preset
from .run import Labels, Run
from .store._store import Store


def with_tools(
    messages: Sequence[dict[str, Any]],
    params: GenerationParams,
    tools: Sequence[dict[str, Any]] | None,
    tool_choice: tools_mod.ToolChoice = "auto",
    parallel: bool = True,
) -> tuple[list[dict[str, str]], GenerationParams, list[dict[str, Any]], tools_mod.Offer | None]:
    """The checked turns and parameters of a chat that may offer tools (their output schema constrains it),
    the tools given, and what is offered of them (``render`` puts it in the prompt)."""
    if isinstance(messages, str) or not isinstance(messages, Sequence):
        check_messages(messages)  # says what is wrong before the tool turns are looked at
    folded, schema, offered = tools_mod.prepare(messages, tools, tool_choice, parallel=parallel, instruct=False)
    offering = None
    if schema is not None:
        if params.json_schema is not None or params.grammar is not None:
            raise ParameterError("tools constrain the output themselves: give tools or json_schema/grammar, not both")
        params = params.model_copy(update={"json_schema": schema})
        offering = tools_mod.offer(offered, tool_choice)
    return check_messages(folded), params, offered, offering


def chat(
    messages: Sequence[dict[str, Any]],
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    on_token: Callable[[str], Any] | None = None,
    cancel: Cancel = None,
    preset: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    source: str = "python",
    run_id: str | None = None,
    tools: Sequence[dict[str, Any]] | None = None,
    tool_choice: tools_mod.ToolChoice = "auto",
    parallel_tool_calls: bool = True,
    conversation_id: str | None = None,
    **params: Any,
) -> Run:
    """Reply to a conversation (OpenAI-style messages); the reply is ``run.text``, the messages are recorded.

    Takes the same parameters as ``generate``; the template's stop strings are used while decoding
    (``run.stop`` keeps the ones asked for). ``run_id`` records the run under a fixed id (recording
    it again replaces it). ``tools`` (OpenAI-style function tools) are offered as ``lmbench.tools``
    describes; the calls the model made are ``run.tool_calls``. ``conversation_id`` files the turn under
    its conversation (``Run.conversation_id``; ``Store.save_conversation`` names it).
    """
    labels = Labels.checked(experiment, tags, source, run_id)
    turns, values, offered, offering = with_tools(
        messages, validate_params({**resolve_preset(preset), **params}), tools, tool_choice, parallel_tool_calls
    )
    if conversation_id is not None:
        check_text("conversation_id", conversation_id, max_chars=64)
    labels = dataclasses.replace(labels, tools=offered or None, conversation_id=conversation_id)
    engine = load_engine(model)
    return complete(
        engine,
        Job.of(render(engine, turns, offering), values, labels, on_token),
        recorder=Recorder.to(store),
        cancel=cancel,
    )
